#include "daemon/contact_sheets.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <time.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "jobs/contact_sheet.h"
#include "jobs/credits.h"
#include "jobs/engine/operator.h"
#include "jobs/json_safe.h"
#include "jobs/output.h"
#include "jobs/util.h"
#include "jobs/video_probe.h"

namespace wb {

namespace {
std::string shell_word(const std::string& s) {
  bool plain = !s.empty() && s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/._-+=:,@") ==
                                 std::string::npos;
  if (plain) return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

bool regular_file(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
}

int64_t now_ms() { return to_epoch_ms(std::chrono::system_clock::now()); }
}  // namespace

std::string retry_command(const Shot& s, const std::string& config_path) {
  if (s.state != ShotState::failed && s.state != ShotState::rejected && s.state != ShotState::held) return "";
  if (s.damaged) return "";  // its record is gone: render it under a new batch name
  bool free = free_resume_step(s) != ShotState::pending;
  return "wanbatch --config " + shell_word(config_path) + " retry " + (free ? "" : "--yes ") + s.batch + "/" +
         s.spec.id;
}

ContactSheets::ContactSheets(const Config& config, Store& store, CpuClock cpu)
    : config_(config), store_(store), cpu_(std::move(cpu)) {
  store_.on_record_written([this](const std::string& key) { on_record_written(key); });
}

ContactSheets::~ContactSheets() { store_.on_record_written(nullptr); }

void ContactSheets::start() {
  for (const auto& b : store_.unfinished_batches()) stale_.insert(b.name);
  index_stale_ = true;
  census_ = store_.census();
  since_census_.clear();
  recount_.clear();
}

void ContactSheets::on_event(const Event& e) {
  if (e.kind == Event::Kind::shot_changed) {
    std::string batch = e.key.substr(0, e.key.find('/'));
    if (census_) {
      // Added to the census's count once it is read (a state may go below zero here).
      auto& states = since_census_[batch].states;
      --states[to_string(e.from)];
      ++states[to_string(e.to)];
    } else if (auto it = lines_.find(batch); it != lines_.end()) {
      // The index's line follows the change; the batch is not read again.
      auto& states = it->second.states;
      if (auto from = states.find(to_string(e.from)); from != states.end() && --from->second <= 0) states.erase(from);
      ++states[to_string(e.to)];
    }
    stale_.insert(std::move(batch));
    index_stale_ = true;
  } else if (e.kind == Event::Kind::job_completed) {
    const std::string batch = e.key.substr(0, e.key.find('/'));
    if (census_)
      since_census_[batch].spent_micro += to_micro(e.credits);
    else if (auto it = lines_.find(batch); it != lines_.end())
      it->second.spent_micro += to_micro(e.credits);
  } else if (e.kind == Event::Kind::batch_finished) {
    lines_.erase(e.key);  // counted once more, exactly, from its records
    if (census_) recount_.insert(e.key);
    finished_.insert(e.key);
    index_stale_ = true;
  }
}

namespace {
constexpr size_t kIndexSlice = 2000;  // shot records counted per loop turn for a batch's line
// The census's share of a loop turn: the control socket and the metrics wait no longer.
constexpr auto kCensusTurn = std::chrono::milliseconds(3);
// A sheet whose last write took no longer than this is written at every interval
// (a batch of a few hundred shots); a dearer one takes at most kSheetShare of the
// daemon's CPU time...
constexpr auto kCheapSheet = std::chrono::milliseconds(10);
constexpr double kSheetShare = 0.05;
// ...or are written again once this old (a big batch's sheet on an idle daemon).
constexpr auto kSheetMaxAge = std::chrono::minutes(10);
// Kept cards with a poster whose file is looked at again per write: a 10,000-shot
// batch's in 40 writes (under seven minutes at the default interval).
constexpr size_t kPosterLooks = 256;
}  // namespace

namespace {
std::chrono::nanoseconds cpu_time(clockid_t clock) {
  timespec ts{};
  ::clock_gettime(clock, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}
}  // namespace

std::chrono::nanoseconds ContactSheets::process_cpu_time() { return cpu_time(CLOCK_PROCESS_CPUTIME_ID); }
std::chrono::nanoseconds ContactSheets::thread_cpu_time() { return cpu_time(CLOCK_THREAD_CPUTIME_ID); }

bool ContactSheets::may_rewrite(const std::string& batch, std::chrono::steady_clock::time_point now) const {
  auto w = written_.find(batch);
  if (w == written_.end()) return true;  // its first sheet since the start
  if (w->second.took <= kCheapSheet || now - w->second.at >= kSheetMaxAge) return true;
  const double budget = kSheetShare * static_cast<double>(cpu_().count());
  return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(spent_ + w->second.took).count()) <=
         budget;
}

Millis ContactSheets::tick(std::chrono::steady_clock::time_point now) {
  const auto interval = std::chrono::milliseconds(static_cast<int64_t>(config_.contact_sheet.interval_seconds * 1000));
  bool due = now - last_write_ >= interval;
  if (finished_.empty() && !index_counting_ && (!due || (stale_.empty() && !index_stale_))) return Millis(1000);
  std::set<std::string> todo = std::move(finished_);
  finished_.clear();
  const std::set<std::string> ended = todo;  // written at once, whatever they cost
  if (due) {
    // A running batch's sheet waits for its share of the CPU (a big batch's sheet
    // costs more than a small one's); what still waits stays stale.
    for (auto it = stale_.begin(); it != stale_.end();) {
      if (!may_rewrite(*it, now)) {
        ++it;
        continue;
      }
      todo.insert(*it);
      it = stale_.erase(it);
    }
  }
  for (const auto& batch : todo) {
    stale_.erase(batch);
    // What a write costs is the loop thread's CPU time, not the wall time: a slow
    // disk's fsync makes no sheet dear.
    const auto started = thread_cpu_time();
    try {
      write_batch(batch, now);
    } catch (const Error& e) {
      spdlog::warn("batch {}: the contact sheet was not written: {}", batch, e.what());
    }
    const std::chrono::steady_clock::duration took = thread_cpu_time() - started;
    if (took > kCheapSheet) spent_ += took;
    if (ended.count(batch))
      written_.erase(batch);
    else
      written_[batch] = Written{now, took};
  }
  try {
    index_counting_ = !write_index(kIndexSlice, std::chrono::steady_clock::now() + kCensusTurn);
  } catch (const Error& e) {
    index_counting_ = false;
    spdlog::warn("the batches' index was not written: {}", e.what());
  }
  if (due || !todo.empty()) last_write_ = now;
  return index_counting_ ? Millis(0) : Millis(1000);
}

SheetCard ContactSheets::card_of(const Shot& s, const std::string& dir, Poster& poster) const {
  SheetContext ctx;
  if (std::string cmd = retry_command(s, config_.path); !cmd.empty()) ctx.retry_commands[s.spec.id] = cmd;
  poster = Poster::none;
  if (s.state == ShotState::done) {
    poster = regular_file(join_path(dir, s.spec.id + ".jpg")) ? Poster::shown : Poster::missing;
    if (poster == Poster::shown) ctx.posters.insert(s.spec.id);
  }
  return sheet_card(s, ctx);
}

void ContactSheets::note_poster(Cards& cards, const std::string& id, Poster poster) {
  if (poster == Poster::missing) cards.posterless.insert(id);
  else cards.posterless.erase(id);
  if (poster == Poster::shown) cards.postered.insert(id);
  else cards.postered.erase(id);
}

void ContactSheets::on_record_written(const std::string& key) {
  if (key.starts_with("b/")) {
    cards_.erase(key.substr(2));
    return;
  }
  if (!key.starts_with("s/")) return;
  const size_t slash = key.find('/', 2);
  if (slash == std::string::npos) return;
  if (auto it = cards_.find(key.substr(2, slash - 2)); it != cards_.end()) it->second.changed.insert(key.substr(slash + 1));
}

void ContactSheets::write_batch(const std::string& batch, std::chrono::steady_clock::time_point now) {
  auto record = store_.batch(batch);
  if (!record) {
    cards_.erase(batch);
    return;
  }
  OutputDir out(config_.output_root);
  const std::string dir = out.batch_dir(batch);
  SheetContext ctx;
  ctx.now_ms = now_ms();
  BatchSheet sheet;
  // Poster frames are taken beside the loop, when each video is probed
  // (jobs/engine/downloader.cpp); the sheet shows the ones that exist.
  auto kept = cards_.find(batch);
  bool read_all = record->finished || kept == cards_.end() || now - kept->second.read_all_at >= kSheetMaxAge ||
                  now < kept->second.read_all_at;
  if (!read_all) {
    // Only the records written since the last write are read again, and the DONE
    // shots whose poster was missing are looked at once more.
    Cards& cards = kept->second;
    for (const auto& id : cards.posterless)
      if (regular_file(join_path(dir, id + ".jpg"))) cards.changed.insert(id);
    auto look = cards.postered.lower_bound(cards.next_poster_look);
    for (size_t n = 0; n < std::min(kPosterLooks, cards.postered.size()); ++n, ++look) {
      if (look == cards.postered.end()) look = cards.postered.begin();
      if (!regular_file(join_path(dir, *look + ".jpg"))) cards.changed.insert(*look);
    }
    cards.next_poster_look = look == cards.postered.end() ? std::string() : *look;
    for (const auto& id : cards.changed) {
      std::optional<Shot> s = store_.shot(batch, id);
      if (!s) {
        read_all = true;  // a record gone: the page is made from what is there
        break;
      }
      Poster poster = Poster::none;
      cards.by_id[id] = card_of(*s, dir, poster);
      note_poster(cards, id, poster);
    }
    cards.changed.clear();
    if (!read_all)
      for (const auto& [id, card] : cards.by_id) sheet.add(card);
  }
  if (read_all) {
    // Nothing was added to `sheet` above. A shot at a time: a 10,000-shot batch's
    // records are never all in memory.
    Cards fresh;
    fresh.read_all_at = now;
    store_.each_shot(batch, [&](const Shot& s) {
      Poster poster = Poster::none;
      SheetCard card = card_of(s, dir, poster);
      sheet.add(card);
      if (record->finished) return;
      note_poster(fresh, s.spec.id, poster);
      fresh.by_id.emplace(s.spec.id, std::move(card));
    });
    if (record->finished)
      cards_.erase(batch);
    else
      cards_[batch] = std::move(fresh);
  }
  if (during_write) during_write();
  out.write(batch, "index.html", std::move(sheet).pieces(*record, ctx));
}

bool ContactSheets::write_index(size_t records, std::chrono::steady_clock::time_point until) {
  if (!index_stale_) return true;
  if (census_) {
    if (!census_->step(records, until)) return false;
    for (const auto& [name, counted] : census_->batches()) {
      if (recount_.count(name)) continue;
      BatchLine l;
      l.batch = counted.record;
      for (const auto& [state, n] : counted.states) l.states[to_string(state)] = static_cast<int>(n);
      l.spent_micro = counted.spent_micro;
      if (auto d = since_census_.find(name); d != since_census_.end()) {
        for (const auto& [state, n] : d->second.states) l.states[state] += n;
        l.spent_micro += d->second.spent_micro;
      }
      std::erase_if(l.states, [](const auto& kv) { return kv.second <= 0; });
      lines_[name] = std::move(l);
    }
    census_.reset();
    since_census_.clear();
    recount_.clear();
  }
  std::vector<BatchLine> lines;
  size_t read = 0;
  bool complete = true;
  for (auto& b : store_.batches()) {
    // A batch's line is counted from its records once (or again when its shot count
    // changed), then kept up to date by the events.
    if (auto it = lines_.find(b.name); it != lines_.end() && it->second.batch.shot_count == b.shot_count) {
      it->second.batch = b;
      lines.push_back(it->second);
      continue;
    }
    if (read >= records) {
      complete = false;
      continue;
    }
    BatchLine l;
    l.batch = b;
    store_.each_shot(b.name, [&](const Shot& s) {
      ++l.states[to_string(s.state)];
      if (s.cost) l.spent_micro += to_micro(*s.cost);
      l.spent_micro += s.earlier_cost_micro;  // earlier takes (revisions), as the batch's sheet counts them
      ++read;
    });
    lines_[b.name] = l;
    lines.push_back(std::move(l));
  }
  if (!complete) return false;
  if (!is_dir(config_.output_root)) throw Error("output_root " + config_.output_root + " is missing");
  write_file_atomic(config_.output_root, "index.html", batches_index_html(std::move(lines), now_ms()));
  index_stale_ = false;
  return true;
}

}  // namespace wb
