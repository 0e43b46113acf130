// The bounded hand-off between producers (libvirt's event-loop thread, the synthetic injector) and
// the JavaScript thread. A preallocated ring of fixed-size slots guarded by one mutex that is held
// only for a slot copy; producers never block (unless a synthetic injector explicitly asks to wait
// for space) and never allocate.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace virtbus {

constexpr size_t kUuidChars = 36;  // VIR_UUID_STRING_BUFLEN - 1
constexpr size_t kNameBuf = 256;   // at most 255 name bytes plus NUL
constexpr size_t kDefaultCapacity = 16384;
constexpr size_t kMaxCapacity = size_t{1} << 22;

// One domain event, exactly as copied on the producing thread.
struct EventSlot {
  uint64_t seq;  // assigned by Push, under the lock
  int64_t wallMicros;
  int64_t monoMicros;
  uint32_t connectionId;
  int32_t eventId;
  int32_t type;
  int32_t detail;
  uint16_t nameLen;
  bool nameTruncated;
  char uuid[kUuidChars + 1];
  char name[kNameBuf];
};

struct CloseItem {
  uint32_t connectionId;
  int32_t reason;
};

struct QueueStatsSnapshot {
  size_t depth;
  size_t capacity;
  size_t highWater;
  uint64_t dropped;
  uint64_t enqueued;
};

enum class FullPolicy {
  kDrop,  // libvirt callbacks: never block the loop thread
  kWait,  // synthetic injector with waitWhenFull: wait for the consumer to make room
};

// Timestamps for a slot (CLOCK_REALTIME / CLOCK_MONOTONIC, microseconds).
void StampNow(EventSlot& slot) noexcept;
// Copies a name into the slot, truncating at 255 bytes on a UTF-8 character boundary.
void CopyName(EventSlot& slot, const char* name) noexcept;

class EventQueue {
 public:
  // Process-wide instance; intentionally leaked so no destructor runs at exit while threads are alive.
  static EventQueue& Get();

  // Any thread. Assigns seq, copies the slot into the ring (or counts a drop), then asks for a wake.
  // With kWait it waits for room while `abort` is unset (and counts a drop if it is set).
  bool Push(EventSlot& slot, FullPolicy policy = FullPolicy::kDrop,
            const std::atomic<bool>* abort = nullptr) noexcept;
  // Close-callback events: a separate small list, never dropped.
  void PushClose(uint32_t connectionId, int reason) noexcept;

  // JS thread. Moves up to `max` events and every close event out; returns the remaining depth.
  size_t Take(size_t max, std::vector<EventSlot>& events, std::vector<CloseItem>& closes,
              uint64_t& overflowed);
  // JS thread, after a drain that failed once Take() had run: the taken events are lost, so they
  // and the overflow Take() reported are counted back into overflow-since-drain (the next drain
  // reports them: "resync needed"); the taken closes go back in front of any newer ones.
  void RestoreAfterFailedDrain(uint64_t lostEvents, uint64_t overflowed, const std::vector<CloseItem>& closes) noexcept;
  // Fails (returns false, sets *why) unless the queue is empty.
  bool SetCapacity(size_t capacity, std::string* why);
  QueueStatsSnapshot Stats();
  bool HasPending();
  // Wakes producers waiting for space (used on teardown).
  void NotifySpace();

 private:
  EventQueue();

  std::mutex mu_;
  std::condition_variable spaceCv_;
  std::vector<EventSlot> ring_;
  size_t head_ = 0;  // oldest item
  size_t count_ = 0;
  size_t highWater_ = 0;
  uint64_t dropped_ = 0;
  uint64_t enqueued_ = 0;
  uint64_t overflowSinceDrain_ = 0;
  uint32_t waiters_ = 0;
  std::vector<CloseItem> closes_;
};

// Process-wide sequence counter; dropped events consume a number too.
uint64_t NextSeq() noexcept;

}  // namespace virtbus
