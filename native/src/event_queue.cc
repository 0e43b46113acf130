#include "event_queue.h"

#include <time.h>

#include <chrono>
#include <cstring>

#include "event_loop.h"

namespace virtbus {

namespace {
std::atomic<uint64_t> g_seq{0};

int64_t ClockMicros(clockid_t clock) noexcept {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}
}  // namespace

uint64_t NextSeq() noexcept { return g_seq.fetch_add(1, std::memory_order_relaxed) + 1; }

void StampNow(EventSlot& slot) noexcept {
  slot.wallMicros = ClockMicros(CLOCK_REALTIME);
  slot.monoMicros = ClockMicros(CLOCK_MONOTONIC);
}

void CopyName(EventSlot& slot, const char* name) noexcept {
  if (name == nullptr) name = "";
  size_t len = strnlen(name, kNameBuf);
  bool truncated = len >= kNameBuf;
  if (truncated) {
    len = kNameBuf - 1;
    // Do not split a UTF-8 sequence: back up over continuation bytes to the lead byte, and drop
    // the lead byte too if its sequence would not fit.
    size_t cut = len;
    while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xC0) == 0x80) cut--;
    len = cut;
  }
  memcpy(slot.name, name, len);
  slot.name[len] = '\0';
  slot.nameLen = static_cast<uint16_t>(len);
  slot.nameTruncated = truncated;
}

EventQueue& EventQueue::Get() {
  static EventQueue* instance = new EventQueue();
  return *instance;
}

EventQueue::EventQueue() : ring_(kDefaultCapacity) { closes_.reserve(64); }

bool EventQueue::Push(EventSlot& slot, FullPolicy policy, const std::atomic<bool>* abort) noexcept {
  bool stored = false;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (policy == FullPolicy::kWait) {
      while (count_ == ring_.size() && !(abort != nullptr && abort->load(std::memory_order_acquire))) {
        waiters_++;
        // Timed, so a missed notification or a teardown can never wedge the producer.
        spaceCv_.wait_for(lock, std::chrono::milliseconds(1));
        waiters_--;
      }
    }
    slot.seq = NextSeq();
    if (count_ < ring_.size()) {
      size_t tail = head_ + count_;
      if (tail >= ring_.size()) tail -= ring_.size();
      ring_[tail] = slot;
      count_++;
      enqueued_++;
      if (count_ > highWater_) highWater_ = count_;
      stored = true;
    } else {
      dropped_++;
      overflowSinceDrain_++;
    }
  }
  RequestWake();
  return stored;
}

void EventQueue::PushClose(uint32_t connectionId, int reason) noexcept {
  {
    std::lock_guard<std::mutex> lock(mu_);
    try {
      closes_.push_back(CloseItem{connectionId, reason});
    } catch (...) {
      // Out of memory for a 8-byte item: nothing sensible left to do. The reserve makes this moot
      // for any realistic number of connections.
    }
  }
  RequestWake();
}

size_t EventQueue::Take(size_t max, std::vector<EventSlot>& events, std::vector<CloseItem>& closes,
                        uint64_t& overflowed) {
  closes.clear();
  // Size the scratch buffer outside the lock: growing and zero-filling it for a big batch (drain()
  // without max can take millions of slots) must not keep the loop thread waiting on mu_. The
  // depth seen here is an upper bound for the batch taken below only because this is re-checked
  // under the lock: events pushed meanwhile stay for the next drain (which the caller re-arms).
  size_t want;
  {
    std::lock_guard<std::mutex> lock(mu_);
    want = count_ < max ? count_ : max;
  }
  if (events.size() != want) events.resize(want);
  // Swapped in below as the producers' list: allocated here, so a producer's push_back never has
  // to (for < 64 pending closes).
  if (closes.capacity() < 64) closes.reserve(64);
  size_t n;
  size_t remaining;
  bool notify;
  {
    std::lock_guard<std::mutex> lock(mu_);
    n = count_ < want ? count_ : want;
    if (n > 0) {
      size_t first = ring_.size() - head_;
      if (first > n) first = n;
      memcpy(static_cast<void*>(events.data()), &ring_[head_], first * sizeof(EventSlot));
      if (n > first) memcpy(static_cast<void*>(events.data() + first), ring_.data(), (n - first) * sizeof(EventSlot));
      head_ += n;
      if (head_ >= ring_.size()) head_ -= ring_.size();
      count_ -= n;
      if (count_ == 0) head_ = 0;
    }
    closes.swap(closes_);
    overflowed = overflowSinceDrain_;
    overflowSinceDrain_ = 0;
    remaining = count_;
    notify = waiters_ > 0 && n > 0;
  }
  events.resize(n);  // n <= want: shrinks, never fills
  if (notify) spaceCv_.notify_all();
  return remaining;
}

void EventQueue::RestoreAfterFailedDrain(uint64_t lostEvents, uint64_t overflowed,
                                        const std::vector<CloseItem>& closes) noexcept {
  std::vector<CloseItem> merged;
  try {
    // Allocated outside the lock; more than 64 closes arriving meanwhile is the only way the insert
    // below allocates under it.
    merged.reserve(closes.size() + 64);
    merged.assign(closes.begin(), closes.end());
  } catch (...) {
    merged.clear();
  }
  std::lock_guard<std::mutex> lock(mu_);
  overflowSinceDrain_ += overflowed + lostEvents;
  if (closes.empty()) return;
  try {
    merged.insert(merged.end(), closes_.begin(), closes_.end());
    closes_.swap(merged);
  } catch (...) {
    // Out of memory: the closes are lost, but the overflow above still forces a resync.
  }
}

bool EventQueue::SetCapacity(size_t capacity, std::string* why) {
  std::vector<EventSlot> fresh(capacity);
  std::lock_guard<std::mutex> lock(mu_);
  if (count_ != 0) {
    *why = "setQueueCapacity: the queue is not empty (drain it first)";
    return false;
  }
  ring_.swap(fresh);
  head_ = 0;
  highWater_ = 0;
  return true;
}

QueueStatsSnapshot EventQueue::Stats() {
  std::lock_guard<std::mutex> lock(mu_);
  return QueueStatsSnapshot{count_, ring_.size(), highWater_, dropped_, enqueued_};
}

bool EventQueue::HasPending() {
  std::lock_guard<std::mutex> lock(mu_);
  return count_ > 0 || !closes_.empty();
}

void EventQueue::NotifySpace() { spaceCv_.notify_all(); }

}  // namespace virtbus
