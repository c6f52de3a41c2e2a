// JSON Lines output of records: one object per line, to a file or stdout.
#pragma once

#include "agent/export/record.h"
#include "apiwarden/common/result.h"

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace apiwarden::records {

// A growable text buffer whose appends inline (std::string's and fmt's are out-of-line calls, and a
// record is some fifty small appends).
class JsonBuffer {
 public:
  void clear() { size_ = 0; }
  size_t size() const { return size_; }
  std::string_view view() const { return {data_.data(), size_}; }
  char& operator[](size_t i) { return data_[i]; }
  void push_back(char c) {
    if (size_ == data_.size()) grow(1);
    data_[size_++] = c;
  }
  void append(std::string_view s) {
    if (data_.size() - size_ < s.size()) grow(s.size());
    std::memcpy(data_.data() + size_, s.data(), s.size());
    size_ += s.size();
  }

 private:
  void grow(size_t more);
  std::vector<char> data_;
  size_t size_ = 0;
};

// The JSON object of a record, without the trailing newline.
std::string toJson(const HttpRecord& record);
std::string toJson(const ConnectionRecord& record);
void appendJson(JsonBuffer& out, const HttpRecord& record);
void appendJson(JsonBuffer& out, const ConnectionRecord& record);
// The record schema's workload object: {"cgroup_id":..,"cgroup_path":..,"pod":..,...}.
std::string workloadToJson(const Workload& workload);
// RFC 3339 UTC with microseconds: "2026-11-22T13:50:01.123456Z".
std::string formatTimestamp(uint64_t realtime_ns);
void appendTimestamp(JsonBuffer& out, uint64_t realtime_ns);

class JsonLinesWriter final : public RecordSink {
 public:
  // path "-" writes to stdout; a file is created or appended to.
  static Result<std::unique_ptr<JsonLinesWriter>> open(const std::string& path);
  ~JsonLinesWriter() override;

  void write(const HttpRecord& record) override;
  void write(const ConnectionRecord& record) override;
  void flush() override;

  uint64_t written() const { return written_; }
  uint64_t writeErrors() const { return write_errors_; }

 private:
  JsonLinesWriter(FILE* file, bool owned) : file_(file), owned_(owned) {}
  template <typename Record>
  void writeLine(const Record& record);

  FILE* file_;
  bool owned_;
  JsonBuffer line_;  // reused: one line is formatted, then written at once
  uint64_t written_ = 0;
  uint64_t write_errors_ = 0;
};

}  // namespace apiwarden::records
