// How many times each 64-bit hash is in a window, in one flat array: object_enumeration counts the
// distinct ids of a window without a heap node per id. Open addressing with linear probing; the
// hashes are stableHash values, already well mixed, so their low bits pick the slot.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace apiwarden::detect {

class HashCounts {
 public:
  size_t distinct() const { return distinct_; }

  void add(uint64_t hash) {
    if (2 * (distinct_ + 1) > slots_.size()) grow();
    Slot& slot = slots_[find(hash)];
    if (slot.count == 0) {
      slot.hash = hash;
      ++distinct_;
    }
    ++slot.count;
  }

  // Takes away one copy of a hash that was added.
  void remove(uint64_t hash) {
    size_t hole = find(hash);
    if (slots_.empty() || slots_[hole].count == 0 || --slots_[hole].count > 0) return;
    --distinct_;
    // Backward-shift deletion: pull later entries of the probe run into the hole when their home
    // slot does not lie between the hole and where they are, so no lookup ever stops short.
    size_t mask = slots_.size() - 1;
    for (size_t i = (hole + 1) & mask; slots_[i].count != 0; i = (i + 1) & mask) {
      size_t home = slots_[i].hash & mask;
      if (((i - home) & mask) >= ((i - hole) & mask)) {
        slots_[hole] = slots_[i];
        hole = i;
      }
    }
    slots_[hole] = {};
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t count = 0;  // 0: the slot is empty
  };

  // The slot holding `hash`, else the empty slot where it would go.
  size_t find(uint64_t hash) const {
    if (slots_.empty()) return 0;
    size_t mask = slots_.size() - 1;
    size_t i = hash & mask;
    while (slots_[i].count != 0 && slots_[i].hash != hash) i = (i + 1) & mask;
    return i;
  }

  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 8 : 2 * old.size(), Slot{});  // a power of two, at most half full
    for (const Slot& slot : old) {
      if (slot.count != 0) slots_[find(slot.hash)] = slot;
    }
  }

  std::vector<Slot> slots_;
  size_t distinct_ = 0;
};

}  // namespace apiwarden::detect
