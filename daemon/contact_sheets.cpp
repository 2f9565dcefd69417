#include "daemon/contact_sheets.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

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

void ContactSheets::start() {
  for (const auto& b : store_.unfinished_batches()) stale_.insert(b.name);
  index_stale_ = true;
}

void ContactSheets::on_event(const Event& e) {
  if (e.kind == Event::Kind::shot_changed) {
    std::string batch = e.key.substr(0, e.key.find('/'));
    finished_lines_.erase(batch);
    stale_.insert(std::move(batch));
    index_stale_ = true;
  } else if (e.kind == Event::Kind::batch_finished) {
    finished_.insert(e.key);
    index_stale_ = true;
  }
}

void ContactSheets::tick(std::chrono::steady_clock::time_point now) {
  const auto interval = std::chrono::milliseconds(static_cast<int64_t>(config_.contact_sheet.interval_seconds * 1000));
  bool due = now - last_write_ >= interval;
  if (finished_.empty() && (!due || (stale_.empty() && !index_stale_))) return;
  std::set<std::string> todo = std::move(finished_);
  finished_.clear();
  if (due) {
    todo.insert(stale_.begin(), stale_.end());
    stale_.clear();
  }
  for (const auto& batch : todo) {
    stale_.erase(batch);
    try {
      write_batch(batch);
    } catch (const Error& e) {
      spdlog::warn("batch {}: the contact sheet was not written: {}", batch, e.what());
    }
  }
  try {
    write_index();
  } catch (const Error& e) {
    spdlog::warn("the batches' index was not written: {}", e.what());
  }
  last_write_ = now;
}

void ContactSheets::write_batch(const std::string& batch) {
  auto record = store_.batch(batch);
  if (!record) return;
  std::vector<Shot> shots = store_.shots(batch);
  OutputDir out(config_.output_root);
  const std::string dir = out.batch_dir(batch);
  SheetContext ctx;
  ctx.now_ms = now_ms();
  // Poster frames are taken beside the loop, when each video is probed
  // (jobs/engine/downloader.cpp); the sheet shows the ones that exist.
  for (const auto& s : shots) {
    if (std::string cmd = retry_command(s, config_.path); !cmd.empty()) ctx.retry_commands[s.spec.id] = cmd;
    if (s.state == ShotState::done && regular_file(join_path(dir, s.spec.id + ".jpg"))) ctx.posters.insert(s.spec.id);
  }
  out.write(batch, "index.html", batch_sheet_html(*record, shots, ctx));
}

void ContactSheets::write_index() {
  if (!index_stale_) return;
  std::vector<BatchLine> lines;
  for (auto& b : store_.batches()) {
    if (auto it = finished_lines_.find(b.name); b.finished && it != finished_lines_.end()) {
      lines.push_back(it->second);
      continue;
    }
    BatchLine l;
    l.batch = b;
    for (const auto& s : store_.shots(b.name)) {
      ++l.states[to_string(s.state)];
      if (s.cost) l.spent_micro += to_micro(*s.cost);
    }
    if (b.finished) finished_lines_[b.name] = l;
    lines.push_back(std::move(l));
  }
  if (!is_dir(config_.output_root)) throw Error("output_root " + config_.output_root + " is missing");
  write_file_atomic(config_.output_root, "index.html", batches_index_html(std::move(lines), now_ms()));
  index_stale_ = false;
}

}  // namespace wb
