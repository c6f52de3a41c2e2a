// A console reporter that also keeps each benchmark's median run (or its only run), so that a
// benchmark binary can print its side-by-side figure after the table.
#pragma once

#include <benchmark/benchmark.h>

#include <map>
#include <string>
#include <vector>

namespace apiwarden::bench {

class MedianReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& run : runs) {
      bool single = run.run_type == Run::RT_Iteration && run.repetitions <= 1;
      if (single || run.aggregate_name == "median") medians_[run.run_name.function_name] = run;
    }
  }
  // The median run of the benchmark function `name` (e.g. "BM_Pipeline"); null if it did not run.
  const Run* median(const std::string& name) const {
    auto it = medians_.find(name);
    return it == medians_.end() ? nullptr : &it->second;
  }

 private:
  std::map<std::string, Run> medians_;
};

}  // namespace apiwarden::bench
