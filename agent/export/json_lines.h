// JSON Lines output of records: one object per line, to a file or stdout.
#pragma once

#include "agent/export/record.h"
#include "apiwarden/common/result.h"

#include <cstdio>
#include <memory>
#include <string>

namespace apiwarden::records {

// The JSON object of a record, without the trailing newline.
std::string toJson(const HttpRecord& record);
std::string toJson(const ConnectionRecord& record);
// The record schema's workload object: {"cgroup_id":..,"cgroup_path":..,"pod":..,...}.
std::string workloadToJson(const Workload& workload);
// RFC 3339 UTC with microseconds: "2026-11-22T13:50:01.123456Z".
std::string formatTimestamp(uint64_t realtime_ns);

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
  void writeLine(const std::string& line);

  FILE* file_;
  bool owned_;
  uint64_t written_ = 0;
  uint64_t write_errors_ = 0;
};

}  // namespace apiwarden::records
