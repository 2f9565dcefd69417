#include "jobs/engine/batches.h"

#include <spdlog/spdlog.h>

#include "jobs/log_context.h"
#include "jobs/paths.h"
#include "jobs/report.h"
#include "jobs/throttle.h"

namespace wb {

void Batches::maybe_finish(const std::string& batch) {
  if (!core_.book.batch(batch) || core_.book.open_in_batch(batch) > 0) return;
  finishing_.insert(batch);
  finish_pending();
}

void Batches::check_all() {
  for (const auto& [name, b] : core_.book.batches()) finishing_.insert(name);
  finish_pending();
}

void Batches::finish_pending() {
  for (auto it = finishing_.begin(); it != finishing_.end();) {
    const std::string name = *it;
    const BatchRecord* b = core_.book.batch(name);
    if (!b || core_.book.open_in_batch(name) > 0) {
      it = finishing_.erase(it);
      continue;
    }
    LogScope log_scope(name);
    BatchRecord rec = *b;
    int64_t now_ms = to_epoch_ms(core_.wall());
    // The book must hold every unfinished shot of the batch; one the store
    // knows unfinished and the book does not (its index entry lost) is
    // followed again, and the batch is not finished without it. The records
    // are read one at a time into the report (a big batch's are never all held).
    bool adopted = false;
    BatchReport report;
    core_.store.each_shot(name, [&](const Shot& stored) {
      report.add(stored);
      if (is_terminal(stored.state) || core_.book.find(stored.key())) return;
      Shot s = stored;
      spdlog::error("{}: unfinished in the store ({}) but not followed; followed again", s.key(), to_string(s.state));
      core_.save(s, Sync::yes);  // writes its index entry again
      if (on_adopt) on_adopt(std::move(s));
      adopted = true;
    });
    if (adopted) {  // looked at again next tick: open while they run, finished once they all ended
      ++it;
      continue;
    }
    try {
      output_.write(name, "report.json", std::move(report).pieces(rec, now_ms));
    } catch (const Error& e) {
      spdlog::warn("batch {}: cannot write its report yet: {}", name, e.what());
      ++it;
      continue;
    }
    rec.finished = true;
    rec.finished_ms = now_ms;
    core_.store.put_batch(rec);
    core_.book.erase_batch(name);
    core_.spend.forget_batch(name);
    it = finishing_.erase(it);
    spdlog::info("batch {}: finished; report in {}", name, join_path(output_.root(), name + "/report.json"));
    core_.events.emit(Event::batch(name));
    if (on_finished) on_finished(rec);
  }
}

void Batches::reopen(const std::string& name) {
  if (core_.book.batch(name)) return;
  // Reopen a finished batch; its report is written again when it ends.
  auto b = core_.store.batch(name);
  if (!b) return;
  b->finished = false;
  b->finished_ms = 0;
  core_.store.put_batch(*b);
  core_.book.add_batch(*b);
  Micro spent = 0;
  for (const auto& s : core_.store.shots(name))
    if (s.cost) spent += to_micro(*s.cost);
  core_.spend.set_batch_spent(name, spent);
}

}  // namespace wb
