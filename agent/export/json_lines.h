// JSON Lines output of records: one object per line, to a file or stdout, written off the caller's thread.
#pragma once

#include "agent/export/record.h"
#include "apiwarden/common/result.h"

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
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

// Lines are formatted on the caller's thread (the ring buffer's drain) into chunks, and written by
// a thread of the writer's own: an output that blocks (page-cache writeback throttling a file, a
// slow reader of stdout) holds up that thread, not the drain, so the kernel's events are not lost
// to it. Chunks wait in memory up to kMaxBacklogBytes; beyond that a chunk is dropped, counted in
// writeErrors() and logged, and the drain goes on.
class JsonLinesWriter final : public RecordSink {
 public:
  static constexpr size_t kChunkBytes = 256 << 10;
  static constexpr size_t kMaxBacklogBytes = 64 << 20;

  // path "-" writes to stdout; a file is created or appended to.
  static Result<std::unique_ptr<JsonLinesWriter>> open(const std::string& path);
  ~JsonLinesWriter() override;  // writes out everything handed over, then closes the file

  void write(const HttpRecord& record) override;
  void write(const ConnectionRecord& record) override;
  // Hands the lines formatted so far to the writer thread, without waiting for the output.
  void flush() override;
  // Waits until every line handed over so far has been written (or failed).
  void sync();

  uint64_t written() const { return written_; }           // lines the output accepted
  uint64_t writeErrors() const { return write_errors_; }  // lines lost: a failed write, or a full backlog

 private:
  struct Chunk {
    JsonBuffer text;
    uint64_t lines = 0;
  };

  JsonLinesWriter(FILE* file, bool owned);
  template <typename Record>
  void writeLine(const Record& record);
  void run();  // the writer thread

  FILE* file_;
  bool owned_;
  Chunk chunk_;  // being filled by the caller's thread

  std::mutex mutex_;
  std::condition_variable work_;  // a chunk was queued, or stop_
  std::condition_variable idle_;  // the queue emptied and nothing is being written
  std::deque<Chunk> queue_;
  size_t queued_bytes_ = 0;
  bool busy_ = false;      // the writer thread holds a chunk
  bool stop_ = false;
  bool dropping_ = false;  // chunks are being dropped: logged once per episode
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> write_errors_{0};
  std::thread thread_;  // last: starts once everything above exists
};

}  // namespace apiwarden::records
