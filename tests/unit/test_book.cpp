// The shot book (jobs/engine/book.h): the due-time queue, the pending order and
// the counts, as pure bookkeeping with times given as plain milliseconds.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "jobs/engine/book.h"
#include "jobs/util.h"

using namespace wb;

namespace {

BatchRecord batch_of(const std::string& name, int priority = 0, int64_t created_ms = 1000) {
  BatchRecord b;
  b.name = name;
  b.priority = priority;
  b.created_ms = created_ms;
  return b;
}

Shot shot_of(const std::string& batch, const std::string& id, int index, ShotState state = ShotState::pending,
             int64_t due_ms = 0) {
  Shot s;
  s.batch = batch;
  s.spec.id = id;
  s.index = index;
  s.state = state;
  s.due_ms = due_ms;
  return s;
}

// Every shot pop_due hands out at `now_ms`, in order, until it has none.
std::vector<std::string> drain(ShotBook& book, int64_t now_ms) {
  std::vector<std::string> out;
  while (Shot* s = book.pop_due(now_ms)) out.push_back(s->key());
  return out;
}

std::vector<std::string> pending_keys(const ShotBook& book) {
  std::vector<std::string> out;
  for (const auto& [k, key] : book.pending()) out.push_back(key);
  return out;
}

}  // namespace

TEST_CASE("book: followed shots come out of the due queue in due-time order, each once, when due") {
  ShotBook book;
  book.add_batch(batch_of("b"));
  book.add(shot_of("b", "late", 0, ShotState::in_flight, 300));
  book.add(shot_of("b", "early", 1, ShotState::fetching, 100));
  book.add(shot_of("b", "mid", 2, ShotState::downloading, 200));
  book.add(shot_of("b", "waiting", 3, ShotState::pending, 50));  // not followed: never queued

  CHECK(book.next_due_ms() == 100);
  CHECK(book.pop_due(99) == nullptr);
  CHECK(drain(book, 200) == std::vector<std::string>{"b/early", "b/mid"});
  CHECK(book.next_due_ms() == 300);
  CHECK(drain(book, 1000) == std::vector<std::string>{"b/late"});
  CHECK(book.pop_due(1000) == nullptr);
  CHECK(book.next_due_ms() == INT64_MAX);
}

TEST_CASE("book: a shot due again at another time is handed out at the new time only") {
  ShotBook book;
  book.add_batch(batch_of("b"));
  Shot& s = book.add(shot_of("b", "x", 0, ShotState::in_flight, 100));

  SUBCASE("later") {
    book.set_due(s, 500);
    CHECK(book.next_due_ms() == 100);  // the stale entry: a wake-up that finds nothing
    CHECK(book.pop_due(499) == nullptr);
    CHECK(drain(book, 500) == std::vector<std::string>{"b/x"});
  }
  SUBCASE("earlier") {
    book.set_due(s, 50);
    CHECK(drain(book, 50) == std::vector<std::string>{"b/x"});
    CHECK(book.pop_due(1000) == nullptr);  // the entry at 100 is stale
  }
}

TEST_CASE("book: ended, busy and no longer followed shots are skipped in the due queue") {
  ShotBook book;
  book.add_batch(batch_of("b"));
  book.add(shot_of("b", "ended", 0, ShotState::in_flight, 100));
  book.add(shot_of("b", "busy", 1, ShotState::in_flight, 100));
  Shot& held = book.add(shot_of("b", "held", 2, ShotState::in_flight, 100));
  book.add(shot_of("b", "due", 3, ShotState::in_flight, 100));

  book.erase("b/ended");
  book.set_busy("b/busy");
  book.set_state(held, ShotState::held);
  CHECK(drain(book, 100) == std::vector<std::string>{"b/due"});

  SUBCASE("clear_busy queues it again at its due time") {
    CHECK(book.busy("b/busy"));
    book.clear_busy("b/busy");
    CHECK_FALSE(book.busy("b/busy"));
    CHECK(book.next_due_ms() == 100);
    CHECK(drain(book, 100) == std::vector<std::string>{"b/busy"});
    book.clear_busy("b/busy");  // not busy: nothing queued
    CHECK(book.pop_due(100) == nullptr);
  }
  SUBCASE("set_due while busy does not hand it out before clear_busy") {
    Shot* busy = book.find("b/busy");
    REQUIRE(busy);
    book.set_due(*busy, 150);
    CHECK(book.pop_due(1000) == nullptr);
    book.clear_busy("b/busy");
    CHECK(book.pop_due(149) == nullptr);
    CHECK(drain(book, 150) == std::vector<std::string>{"b/busy"});
  }
  SUBCASE("a held shot followed again is queued at its due time") {
    book.set_state(held, ShotState::in_flight);
    CHECK(drain(book, 100) == std::vector<std::string>{"b/held"});
  }
}

TEST_CASE("book: a followed shot is handed out once per due time, however it was queued") {
  ShotBook book;
  book.add_batch(batch_of("b"));
  Shot& s = book.add(shot_of("b", "x", 0, ShotState::in_flight, 100));
  // Each of these pushes another queue entry at the same due time.
  book.set_due(s, 100);
  book.set_state(s, ShotState::fetching);
  CHECK(book.pop_due(100) == &s);
  // The caller starts its step (set_busy) or sets it due again: either way,
  // until then, nothing more for this shot.
  CHECK(book.pop_due(100) == nullptr);
}

TEST_CASE("book: pending shots go by priority, then batch age, then batch name, then index") {
  ShotBook book;
  book.add_batch(batch_of("old", 0, 1000));
  book.add_batch(batch_of("new", 0, 2000));
  book.add_batch(batch_of("urgent", 5, 3000));
  book.add_batch(batch_of("twin-b", 0, 1500));
  book.add_batch(batch_of("twin-a", 0, 1500));
  book.add(shot_of("new", "n0", 0));
  book.add(shot_of("old", "o1", 1));
  book.add(shot_of("old", "o0", 0));
  book.add(shot_of("twin-b", "t0", 0));
  book.add(shot_of("twin-a", "t0", 0));
  book.add(shot_of("urgent", "u0", 0));
  book.add(shot_of("old", "o2", 2, ShotState::in_flight));  // not pending

  CHECK(pending_keys(book) ==
        std::vector<std::string>{"urgent/u0", "old/o0", "old/o1", "twin-a/t0", "twin-b/t0", "new/n0"});

  // Leaving and re-entering PENDING keeps the order.
  Shot* o0 = book.find("old/o0");
  REQUIRE(o0);
  book.set_state(*o0, ShotState::submitting);
  CHECK(pending_keys(book).front() == "urgent/u0");
  CHECK(pending_keys(book)[1] == "old/o1");
  book.set_state(*o0, ShotState::pending);
  CHECK(pending_keys(book)[1] == "old/o0");
}

TEST_CASE("book: within a batch the longest render goes first, then manifest order") {
  ShotBook book;
  book.add_batch(batch_of("a", 0, 1000));
  book.add_batch(batch_of("b", 0, 2000));
  auto sized = [](const std::string& batch, const std::string& id, int index, const char* res, int seconds) {
    Shot s = shot_of(batch, id, index);
    s.spec.resolution = res;
    s.spec.duration = seconds;
    return s;
  };
  book.add(sized("a", "short", 0, "720P", 5));
  book.add(sized("a", "long", 1, "720P", 10));
  book.add(sized("a", "big", 2, "1080P", 10));
  book.add(sized("a", "short2", 3, "720P", 5));
  book.add(sized("b", "huge", 0, "1080P", 15));  // a later batch still waits for the earlier one
  CHECK(pending_keys(book) == std::vector<std::string>{"a/big", "a/long", "a/short", "a/short2", "b/huge"});
  // skip_batch passes every shot of the batch, whatever its length.
  CHECK(book.skip_batch(book.pending().begin())->second == "b/huge");
  CHECK(book.skip_batch(std::next(book.pending().begin(), 2))->second == "b/huge");
}

TEST_CASE("book: skip_batch moves past every pending shot of the batch at hand") {
  ShotBook book;
  book.add_batch(batch_of("a", 0, 1000));
  book.add_batch(batch_of("b", 0, 2000));
  for (int i = 0; i < 3; ++i) book.add(shot_of("a", "a" + std::to_string(i), i));
  book.add(shot_of("b", "b0", 0));

  auto it = book.pending().begin();
  CHECK(it->second == "a/a0");
  it = book.skip_batch(it);
  REQUIRE(it != book.pending().end());
  CHECK(it->second == "b/b0");
  // From the middle of a batch, too.
  auto mid = std::next(book.pending().begin());
  CHECK(mid->second == "a/a1");
  CHECK(book.skip_batch(mid)->second == "b/b0");
  // The last batch: the end; the end stays the end.
  CHECK(book.skip_batch(it) == book.pending().end());
  CHECK(book.skip_batch(book.pending().end()) == book.pending().end());
}

TEST_CASE("book: counts, slots and open shots per batch follow set_state, replacement and erase") {
  ShotBook book;
  book.add_batch(batch_of("a"));
  book.add_batch(batch_of("b"));
  Shot& a0 = book.add(shot_of("a", "a0", 0));
  book.add(shot_of("a", "a1", 1));
  book.add(shot_of("b", "b0", 0, ShotState::in_flight, 10));

  CHECK(book.size() == 3);
  CHECK(book.count(ShotState::pending) == 2);
  CHECK(book.count(ShotState::in_flight) == 1);
  CHECK(book.count(ShotState::done) == 0);
  CHECK(book.in_slot() == 1);
  CHECK(book.open_in_batch("a") == 2);
  CHECK(book.open_in_batch("b") == 1);
  CHECK(book.open_in_batch("none") == 0);

  const std::vector<ShotState> path = {ShotState::submitting, ShotState::in_flight, ShotState::fetching,
                                       ShotState::downloading};
  for (ShotState st : path) {
    book.set_state(a0, st);
    // At the provider while SUBMITTING or IN_FLIGHT; a finished job being fetched
    // or downloaded has freed its slot.
    CHECK(book.in_slot() == (at_provider(st) ? 2 : 1));
    CHECK(book.count(st) == (st == ShotState::in_flight ? 2 : 1));
  }
  CHECK(book.count(ShotState::pending) == 1);
  book.set_state(a0, ShotState::done);
  CHECK(book.in_slot() == 1);
  CHECK(book.count(ShotState::done) == 1);
  CHECK(book.count(ShotState::downloading) == 0);
  book.set_state(a0, ShotState::done);  // no change: counted once
  CHECK(book.count(ShotState::done) == 1);

  // Adding a shot of the same key replaces it, its counts with it.
  book.add(shot_of("b", "b0", 0, ShotState::pending));
  CHECK(book.size() == 3);
  CHECK(book.in_slot() == 0);
  CHECK(book.count(ShotState::in_flight) == 0);
  CHECK(book.count(ShotState::pending) == 2);
  CHECK(book.open_in_batch("b") == 1);
  CHECK(pending_keys(book) == std::vector<std::string>{"a/a1", "b/b0"});

  book.erase("a/a0");
  book.erase("a/a1");
  book.erase("a/a1");  // twice: harmless
  CHECK(book.size() == 1);
  CHECK(book.open_in_batch("a") == 0);
  CHECK(book.count(ShotState::done) == 0);
  CHECK(book.count(ShotState::pending) == 1);
  CHECK(pending_keys(book) == std::vector<std::string>{"b/b0"});
}

TEST_CASE("book: a shot added before its batch is refused and changes nothing") {
  ShotBook book;
  book.add_batch(batch_of("a"));
  book.add(shot_of("a", "a0", 0));
  CHECK_THROWS_AS(book.add(shot_of("nobatch", "x", 0, ShotState::in_flight, 5)), Error);
  CHECK(book.size() == 1);
  CHECK(book.find("nobatch/x") == nullptr);
  CHECK(book.count(ShotState::in_flight) == 0);
  CHECK(book.in_slot() == 0);
  CHECK(book.open_in_batch("nobatch") == 0);
  CHECK(book.next_due_ms() == INT64_MAX);
}
