// Implementation notes.
// - Every shot that is not terminal lives in shots_ and mirrors its stored
//   record; a change is saved before anything depends on it. The two writes
//   that decide whether money is spent twice are synced: SUBMITTING (with its
//   ledger line) before the POST leaves, and the request_id right after.
// - A shot has at most one request on the wire (busy_). Callbacks look the
//   shot up again by key, so a shot that ended meanwhile is simply skipped.
// - tick() is O(unfinished shots); submits are taken in priority order.
#include "jobs/scheduler.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>

#include "jobs/crash_point.h"
#include "jobs/mp4.h"
#include "jobs/paths.h"
#include "jobs/report.h"
#include "jobs/segmind.h"

namespace wb {

namespace {

Millis seconds(double s) { return Millis(static_cast<int64_t>(s * 1000.0)); }

// The size a download's deadline assumes when the server announces none (a
// Wan 2.7 video is tens of MB): at 16 KiB/s, about four and a half hours.
constexpr long long kUnannouncedDownloadBytes = 256ll << 20;

bool id_is_batch(const std::string& target) { return target.find('/') == std::string::npos; }

std::string format_credits(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

// A provider's wall-clock reset time as a monotonic deadline. At most an hour
// ahead: a wall clock that stepped back must not stall the work for the step.
MonoPoint mono_until(TimePoint reset_at, TimePoint wall_now, MonoPoint mono_now) {
  int64_t ahead = std::clamp<int64_t>(to_epoch_ms(reset_at) - to_epoch_ms(wall_now), 0, 3600 * 1000);
  return mono_now + Millis(ahead);
}

nlohmann::json ledger_entry(const Shot& s, const std::string& event, TimePoint now) {
  return {{"time", iso8601_utc(now)}, {"shot", s.key()}, {"event", event},
          {"attempt", s.submit_attempts}};
}

}  // namespace

Scheduler::Scheduler(const Config& config, Store& store, Transport& transport, NowFn wall, MonoFn mono,
                     std::string api_key)
    : config_(config),
      store_(store),
      transport_(transport),
      wall_(std::move(wall)),
      mono_(std::move(mono)),
      api_key_(std::move(api_key)),
      output_(config.output_root),
      cost_(config.pricing),
      bucket_(config.limits.submits_per_minute, mono_()) {
  std::string err;
  window_ = TimeWindow::parse(config.window, err).value_or(TimeWindow());
}

Scheduler::~Scheduler() = default;

void Scheduler::load() {
  for (auto& b : store_.batches())
    if (!b.finished) batches_[b.name] = b;
  TimePoint now = wall_();
  const int64_t mono_now = mono_ms(mono_());
  for (auto& s : store_.all_shots()) {
    if (s.cost) {  // spend so far, for budgets and the cost model
      cost_.observe(s.spec, *s.cost);
      if (batches_.count(s.batch)) batch_spent_[s.batch] += *s.cost;
      if (s.completed_ms) daily_spent_[local_day(from_epoch_ms(s.completed_ms))] += *s.cost;
    }
    if (is_terminal(s.state)) continue;
    if (s.state == ShotState::submitting) {
      // The POST may or may not have reached the provider. Never resend blindly.
      store_.append_ledger(ledger_entry(s, "ambiguous_on_restart", now));
      s.state = ShotState::held;
      s.reason =
          "ambiguous submit: the daemon stopped after sending the submit and before recording a "
          "request_id; the job may exist and be billed. Check the provider's dashboard, then "
          "`wanbatch retry` it if it was not run";
      store_.put_shot(s, Sync::yes);
      spdlog::warn("{}: HELD, {}", s.key(), s.reason);
      continue;
    }
    if (!batches_.count(s.batch)) {
      // Its batch record was lost or marked finished by a damaged store: the
      // batch is open again (a stand-in record when there is none), so the shot
      // is followed and the batch reported when it ends.
      BatchRecord b = store_.batch(s.batch).value_or(BatchRecord{});
      if (b.name.empty()) {
        b.name = s.batch;
        b.damaged = true;
      }
      b.finished = false;
      store_.put_batch(b);
      spdlog::warn("batch {}: reopened for its unfinished shot {}", b.name, s.key());
      batches_[b.name] = b;
    }
    s.attempts = 0;
    s.due_ms = 0;
    // How long it has been followed, on the monotonic clock, from the wall time
    // it was submitted (bounded: the wall clock may have stepped meanwhile).
    if (s.submitted_ms)
      s.followed_since_ms = mono_now - std::clamp<int64_t>(to_epoch_ms(now) - s.submitted_ms, 0, 3600 * 1000);
    shots_[s.key()] = s;
  }
  for (auto& [name, b] : batches_) finishing_.insert(name);
  paused_ = store_.meta("paused").value_or("0") == "1";
  if (paused_) spdlog::warn("submits are paused (wanbatch resume to resume)");
  spdlog::info("loaded {} unfinished shots in {} unfinished batches", shots_.size(), batches_.size());
}

Scheduler::Accept Scheduler::accept(const Manifest& m, const std::string& manifest_name,
                                    const std::string& manifest_path, const std::string& held_reason) {
  std::vector<Shot> known;  // shots a stand-in batch already has (from the journal)
  if (auto existing = store_.batch(m.batch)) {
    // A stand-in for a batch the store lost is completed from its manifest; the
    // journal's shots keep their HELD stand-ins.
    if (!(existing->damaged && !held_reason.empty()))
      return existing->sha256 == m.sha256 ? Accept::already_added : Accept::name_taken;
    known = store_.shots(m.batch);
  }
  BatchRecord b;
  b.name = m.batch;
  b.priority = m.priority;
  b.budget_credits = m.budget_credits;
  b.manifest_name = manifest_name;
  b.manifest_path = manifest_path;
  b.sha256 = m.sha256;
  b.base_dir = m.base_dir;
  b.created_ms = to_epoch_ms(wall_());
  b.shot_count = static_cast<int>(m.shots.size());
  std::vector<Shot> shots;
  for (size_t i = 0; i < m.shots.size(); ++i) {
    if (std::any_of(known.begin(), known.end(), [&](const Shot& k) { return k.spec.id == m.shots[i].id; }))
      continue;
    Shot s;
    s.batch = m.batch;
    s.index = static_cast<int>(i);
    s.spec = m.shots[i];
    if (!held_reason.empty()) {
      s.state = ShotState::held;
      s.reason = held_reason;
    }
    shots.push_back(std::move(s));
  }
  store_.add_batch(b, shots);
  crash_point("accepted");
  batches_[b.name] = b;
  for (auto& s : shots)
    if (!is_terminal(s.state)) shots_[s.key()] = std::move(s);
  spdlog::info("batch {}: accepted {} shots from {}{}", b.name, b.shot_count, manifest_name,
               held_reason.empty() ? "" : ", all HELD: " + held_reason);
  maybe_finish(b.name);
  return Accept::added;
}

Shot* Scheduler::find(const std::string& key) {
  auto it = shots_.find(key);
  return it == shots_.end() ? nullptr : &it->second;
}

void Scheduler::save(Shot& shot, Sync sync) { store_.put_shot(shot, sync); }

HttpRequest Scheduler::api_request(std::string url, std::string json_body) const {
  HttpRequest req;
  req.url = std::move(url);
  req.headers = {"x-api-key: " + api_key_, "Accept: application/json"};
  if (!json_body.empty()) {
    req.method = "POST";
    req.headers.push_back("Content-Type: application/json");
    req.body = std::move(json_body);
  }
  req.timeout = seconds(config_.api.request_timeout_seconds);
  req.connect_timeout = seconds(config_.api.connect_timeout_seconds);
  return req;
}

Millis Scheduler::backoff(int attempts) {
  return backoff_delay(attempts, config_.retry.base_delay_seconds, config_.retry.max_delay_seconds,
                       std::uniform_real_distribution<double>(0.0, 1.0)(rng_));
}

Millis Scheduler::poll_interval(const Shot& shot, int64_t now_ms) const {
  Millis lo = seconds(config_.poll.min_interval_seconds);
  Millis hi = seconds(config_.poll.max_interval_seconds);
  int64_t elapsed = std::max<int64_t>(0, now_ms - shot.followed_since_ms);
  Millis want(elapsed / 10);
  auto seen = processing_seen_ms_.find(shot.key());
  if (seen != processing_seen_ms_.end() && expected_render_ms_ > 0) {
    // Rendering: sleep through most of the expected render, then poll closely.
    double remaining = expected_render_ms_ - static_cast<double>(now_ms - seen->second);
    if (remaining > -expected_render_ms_) want = Millis(static_cast<int64_t>(std::max(0.0, remaining / 2)));
  }
  return std::clamp(want, lo, hi);
}

void Scheduler::end(Shot& shot, ShotState state, const std::string& reason) {
  bool following = shot.state == ShotState::in_flight || shot.state == ShotState::fetching ||
                   shot.state == ShotState::downloading;
  shot.held_from = state == ShotState::held && following ? shot.state : ShotState::pending;
  shot.state = state;
  shot.reason = reason;
  save(shot, Sync::yes);
  if (state == ShotState::done)
    spdlog::info("{}: DONE -> {}", shot.key(), shot.file);
  else
    spdlog::warn("{}: {}: {}", shot.key(), to_string(state), reason);
  std::string batch = shot.batch;
  processing_seen_ms_.erase(shot.key());
  busy_.erase(shot.key());
  shots_.erase(shot.key());
  maybe_finish(batch);
}

void Scheduler::retry_later(Shot& shot, const std::string& why, bool limited) {
  ++shot.attempts;
  if (limited && shot.attempts >= config_.retry.max_attempts) {
    end(shot, ShotState::held,
        "gave up after " + std::to_string(shot.attempts) + " attempts at " +
            std::string(to_string(shot.state)) + ": " + why);
    return;
  }
  shot.due_ms = mono_ms(mono_() + backoff(shot.attempts - 1));
  spdlog::info("{}: {} retry {} later: {}", shot.key(), to_string(shot.state), shot.attempts, why);
}

Millis Scheduler::tick() {
  const TimePoint wall = wall_();
  const MonoPoint now = mono_();
  const int64_t now_ms = mono_ms(now);
  finish_pending_batches();

  std::vector<Shot*> ready;
  int64_t next_ms = now_ms + 60000;
  int slots_used = 0;  // starting polls, fetches and downloads does not change it
  for (auto& [key, shot] : shots_) {
    if (occupies_slot(shot.state)) ++slots_used;
    if (busy_.count(key)) continue;
    if (shot.due_ms > now_ms) {
      next_ms = std::min(next_ms, shot.due_ms);
      continue;
    }
    switch (shot.state) {
      case ShotState::pending:
        ready.push_back(&shot);
        break;
      case ShotState::in_flight:
      case ShotState::fetching:
        if (!is_plain_token(shot.request_id)) {
          // Only a record from elsewhere (an old version, a hand edit) can hold one.
          end(shot, ShotState::held, "request_id is not a plain token; not followed");
          break;
        }
        if (shot.state == ShotState::in_flight)
          start_api_get(shot, status_url(config_.api, shot.request_id), &Scheduler::on_poll);
        else
          start_api_get(shot, result_url(config_.api, shot.request_id), &Scheduler::on_fetch);
        break;
      case ShotState::downloading:
        if (downloads_on_wire_ < config_.limits.max_concurrent_downloads) start_download(shot, now);
        break;
      default:
        break;
    }
  }

  if (!credits_on_wire_ && now >= next_credit_check_) start_credit_check();
  next_ms = std::min(next_ms, mono_ms(next_credit_check_));

  // Pending shots: uploads first, then submits in priority order. The sort key
  // is built once per tick: this runs on every completed request.
  struct Order {
    int priority;
    int64_t created_ms;
    const std::string* batch;
    int index;
    Shot* shot;
  };
  std::vector<Order> order;
  order.reserve(ready.size());
  for (Shot* s : ready) {
    const BatchRecord& b = batches_[s->batch];
    order.push_back({b.priority, b.created_ms, &s->batch, s->index, s});
  }
  std::sort(order.begin(), order.end(), [](const Order& a, const Order& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    if (a.created_ms != b.created_ms) return a.created_ms < b.created_ms;
    if (*a.batch != *b.batch) return *a.batch < *b.batch;
    return a.index < b.index;
  });
  if (order.empty()) return Millis(std::max<int64_t>(0, next_ms - mono_ms(mono_())));
  Commitments c = commitments();
  const std::string held_all = common_gate(wall, now, next_ms);  // the same for every shot this tick
  const double spent_today = daily_spent_[local_day(wall)];
  for (const Order& o : order) {
    Shot* shot = o.shot;
    if (!media_ready(*shot)) continue;
    if (shot->state != ShotState::pending || stopping_) continue;  // ended while preparing media
    double estimate = cost_.estimate(shot->spec);
    std::string why = held_all;
    if (why.empty() && slots_used >= config_.limits.max_in_flight)
      why = "waiting: in-flight cap (limits.max_in_flight " + std::to_string(config_.limits.max_in_flight) + ")";
    if (why.empty()) why = spend_gate(*shot, estimate, c, spent_today);
    if (why.empty() && !bucket_.try_take(now)) {
      next_ms = std::min(next_ms, mono_ms(bucket_.next_token(now)));
      why = "waiting: submit rate (limits.submits_per_minute, now " + format_credits(bucket_.current_per_minute()) +
            "/min)";
    }
    if (!why.empty()) {
      if (why != shot->reason) {
        shot->reason = why;
        save(*shot);
      }
      continue;
    }
    ++slots_used;
    c.reserved += estimate;
    c.batch[shot->batch] += estimate;
    start_submit(*shot, wall);
  }
  return Millis(std::max<int64_t>(0, next_ms - mono_ms(mono_())));
}

bool Scheduler::media_ready(Shot& shot) {
  struct Field {
    const MediaRef& ref;
    std::string& url;
    MediaKind kind;
  };
  Field fields[] = {{shot.spec.image, shot.image_url, MediaKind::image},
                    {shot.spec.last_frame, shot.last_frame_url, MediaKind::image},
                    {shot.spec.audio, shot.audio_url, MediaKind::audio}};
  // Every path below that leaves a field without its URL returns false.
  for (auto& f : fields) {
    if (f.ref.path.empty() || !f.url.empty()) continue;
    struct stat st {};
    bool seen = ::stat(f.ref.path.c_str(), &st) == 0;
    int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    if (seen) {
      auto it = hash_cache_.find(f.ref.path);
      if (it != hash_cache_.end() && it->second.size == st.st_size && it->second.mtime_ns == mtime) {
        if (auto url = store_.asset_url(it->second.sha256)) {
          f.url = *url;
          save(shot);
          continue;
        }
        if (uploading_.count(it->second.sha256)) return false;  // another shot uploads it
      }
    }
    if (uploads_on_wire_ >= config_.limits.max_concurrent_uploads) return false;
    MediaFile file;
    try {
      file = read_media(f.ref.path, config_.input_roots, config_.limits.max_media_bytes, f.kind);
    } catch (const Error& e) {
      end(shot, ShotState::rejected, std::string("local media: ") + e.what());
      return false;
    }
    hash_cache_[f.ref.path] = {static_cast<long long>(file.data.size()), mtime, file.sha256};
    if (auto url = store_.asset_url(file.sha256)) {
      f.url = *url;
      save(shot);
      continue;
    }
    std::string sha = file.sha256;
    uploading_.insert(sha);
    ++uploads_on_wire_;
    busy_.insert(shot.key());
    HttpRequest req = api_request(config_.api.storage_url, upload_body(file.mime, file.data));
    std::string key = shot.key();
    std::string path = f.ref.path;
    spdlog::info("{}: uploading {} ({} bytes)", key, path, file.data.size());
    transport_.start(std::move(req), [this, key, sha, path](HttpResponse r) {
      --uploads_on_wire_;
      uploading_.erase(sha);
      busy_.erase(key);
      UploadAnswer a = classify_upload(r);
      Shot* s = find(key);
      if (a.verdict == Verdict::ok) {
        store_.put_asset(sha, a.url);
        if (s) s->attempts = 0;
        spdlog::info("{}: uploaded {}", key, path);
        return;
      }
      if (!s) return;
      if (a.verdict == Verdict::rejected || a.verdict == Verdict::bug)
        end(*s, ShotState::held, "upload of " + path + " refused: " + a.message);
      else
        retry_later(*s, "upload of " + path + ": " + a.message, true);
    });
    return false;
  }
  return true;
}

Scheduler::Commitments Scheduler::commitments() const {
  Commitments c;
  for (const auto& [key, s] : shots_) {
    if (!occupies_slot(s.state) || s.cost) continue;  // a known cost is already charged
    double e = cost_.estimate(s.spec);
    c.reserved += e;
    c.batch[s.batch] += e;
  }
  return c;
}

std::string Scheduler::common_gate(TimePoint wall, MonoPoint now, int64_t& next_ms) const {
  if (paused_) return "waiting: submits paused by an operator (wanbatch resume)";
  if (!window_.contains(wall)) {
    // The window is local wall time; the wait for it runs on the monotonic clock
    // (at most a minute at a time, so a wall-clock step is noticed).
    TimePoint open = window_.next_open(wall);
    next_ms = std::min(next_ms, mono_ms(now) + std::clamp<int64_t>(to_epoch_ms(open) - to_epoch_ms(wall), 0, 60000));
    return "waiting: outside the submit window " + window_.text() + " (opens " + iso8601_utc(open) + ")";
  }
  if (now < submits_blocked_until_) {
    next_ms = std::min(next_ms, mono_ms(submits_blocked_until_));
    return "waiting: " + submits_blocked_reason_ + " (until " +
           iso8601_utc(wall + std::chrono::duration_cast<Millis>(submits_blocked_until_ - now)) + ")";
  }
  if (!balance_read_) return "waiting: reading the credit balance";
  if (credits_wait_)
    return "waiting: insufficient credits (balance " + (balance_ ? format_credits(*balance_) : std::string("unknown")) +
           "); submits resume when the balance recovers";
  return "";
}

std::string Scheduler::spend_gate(const Shot& shot, double estimate, const Commitments& c, double spent_today) {
  const BatchRecord& b = batches_.at(shot.batch);
  auto committed = c.batch.find(shot.batch);
  double batch_committed = batch_spent_[shot.batch] + (committed != c.batch.end() ? committed->second : 0.0);
  if (b.budget_credits && batch_committed + estimate > *b.budget_credits + 1e-9)
    return "waiting: batch budget " + format_credits(*b.budget_credits) + " would be exceeded (committed " +
           format_credits(batch_committed) + ", this shot ~" + format_credits(estimate) + ")";
  double daily = config_.limits.daily_budget_credits;
  double today = spent_today + c.reserved;
  if (daily > 0 && today + estimate > daily + 1e-9)
    return "waiting: daily budget " + format_credits(daily) + " would be exceeded (committed today " +
           format_credits(today) + ")";
  if (balance_) {
    double available = *balance_ - spent_since_balance_ - c.reserved - config_.limits.credit_reserve;
    if (available < estimate)
      return "waiting: credits: balance " + format_credits(*balance_) + " less " +
             format_credits(spent_since_balance_ + c.reserved) + " committed and the reserve " +
             format_credits(config_.limits.credit_reserve) + " leaves " + format_credits(available) +
             ", this shot needs ~" + format_credits(estimate);
  }
  return "";
}

void Scheduler::start_credit_check() {
  credits_on_wire_ = true;
  transport_.start(api_request(credits_url(config_.api)), [this](HttpResponse r) {
    credits_on_wire_ = false;
    balance_read_ = true;  // answered or failed: submits need not wait for it any longer
    MonoPoint now = mono_();
    auto balance = parse_credits(r);
    Millis interval = seconds(config_.credits.check_interval_seconds);
    if (credits_wait_) interval = std::min(interval, Millis(30000));
    next_credit_check_ = now + interval;
    if (!balance) {
      spdlog::warn("credit balance check failed: {}", error_message(r));
      return;
    }
    set_balance(*balance);
    spdlog::debug("credit balance {}", *balance);
  });
}

void Scheduler::set_balance(double balance) {
  balance_ = balance;
  spent_since_balance_ = 0;
  if (credits_wait_) {
    Commitments c = commitments();
    double smallest = std::numeric_limits<double>::max();
    for (const auto& [key, s] : shots_)
      if (s.state == ShotState::pending) smallest = std::min(smallest, cost_.estimate(s.spec));
    if (balance - c.reserved - config_.limits.credit_reserve >= smallest ||
        smallest == std::numeric_limits<double>::max()) {
      credits_wait_ = false;
      spdlog::info("credit balance {} covers the next shot: submits resume", balance);
    }
  }
}

void Scheduler::set_paused(bool paused) {
  paused_ = paused;
  store_.put_meta("paused", paused ? "1" : "0");
  spdlog::info(paused ? "submits paused by an operator" : "submits resumed by an operator");
}

void Scheduler::start_submit(Shot& shot, TimePoint now) {
  crash_point("before_submitting");
  shot.state = ShotState::submitting;
  ++shot.submit_attempts;
  shot.reason.clear();
  // Synced before the POST leaves: a crash from here on is an ambiguous submit.
  try {
    store_.put_shot_and_ledger(shot, ledger_entry(shot, "attempt", now));
  } catch (const Error&) {
    // Not recorded (a full state disk), so not sent: the shot waits as it was.
    shot.state = ShotState::pending;
    --shot.submit_attempts;
    throw;
  }
  crash_point("submitting");
  HttpRequest req = api_request(submit_url(config_.api), submit_body(shot));
  req.connection = ConnectionUse::fresh;
  busy_.insert(shot.key());
  ++submits_on_wire_;
  std::string key = shot.key();
  transport_.start(std::move(req), [this, key](HttpResponse r) {
    --submits_on_wire_;
    busy_.erase(key);
    on_submit(key, r);
  });
}

void Scheduler::on_submit(const std::string& key, const HttpResponse& r) {
  Shot* shot = find(key);
  if (!shot) return;
  const TimePoint wall = wall_();
  const MonoPoint now = mono_();
  SubmitAnswer a = classify_submit(r);
  auto entry = ledger_entry(*shot, "", wall);
  entry["verdict"] = to_string(a.verdict);
  entry["http_status"] = r.status;
  if (!a.message.empty()) entry["message"] = a.message;
  if (a.verdict == Verdict::ok) {
    auto owner = store_.shot_by_request(a.request_id);
    if (owner && *owner != key) {
      // A request_id belongs to one shot. This submit may or may not have
      // started a job of its own: a person decides, nothing is resent.
      entry["event"] = "duplicate_request_id";
      entry["request_id"] = a.request_id;
      store_.append_ledger(entry);
      // Which of the two submits the job belongs to is unknown, so the shot that
      // holds the id is not trusted with it either: its own job may be another.
      if (Shot* first = find(*owner); first && first->state != ShotState::submitting) {
        end(*first, ShotState::held,
            "ambiguous submit: the provider answered this shot's request_id " + a.request_id + " again for " + key +
                "; which job is whose is unknown, and this shot's own job may never have been followed. Check the "
                "provider's dashboard, then `wanbatch retry` it");
      } else if (!first) {
        spdlog::warn("{}: its request_id {} was answered again for {}; its video may be {}'s job", *owner,
                     a.request_id, key, key);
      }
      end(*shot, ShotState::held,
          "ambiguous submit: the provider answered request_id " + a.request_id + ", which already belongs to " +
              *owner + "; this submit may have started a job of its own and been billed. Check the provider's "
              "dashboard, then `wanbatch retry` it if it was not run");
      return;
    }
  }
  switch (a.verdict) {
    case Verdict::ok:
      shot->state = ShotState::in_flight;
      shot->request_id = a.request_id;
      shot->submitted_ms = to_epoch_ms(wall);
      shot->followed_since_ms = mono_ms(now);
      shot->attempts = 0;
      shot->remote_status = "QUEUED";
      shot->due_ms = mono_ms(now + seconds(config_.poll.min_interval_seconds));
      consecutive_429_ = 0;
      entry["event"] = "accepted";
      entry["request_id"] = a.request_id;
      store_.put_shot_and_ledger(*shot, entry);
      crash_point("request_id");
      spdlog::info("{}: submitted, request_id {}", key, a.request_id);
      return;
    case Verdict::ambiguous:
      entry["event"] = "ambiguous";
      store_.append_ledger(entry);
      end(*shot, ShotState::held,
          "ambiguous submit: " + a.message +
              ". The job may exist and be billed; check the provider's dashboard, then `wanbatch "
              "retry` it if it was not run");
      return;
    case Verdict::rejected:
      entry["event"] = "rejected";
      store_.append_ledger(entry);
      end(*shot, ShotState::rejected, a.message);
      return;
    case Verdict::bug:
    case Verdict::failed:
    case Verdict::not_found:
      entry["event"] = "refused";
      store_.append_ledger(entry);
      end(*shot, ShotState::held, "submit refused: " + a.message);
      return;
    case Verdict::auth:
    case Verdict::credits:
    case Verdict::rate_limited:
    case Verdict::retry: {
      entry["event"] = "not_accepted";
      store_.append_ledger(entry);
      shot->state = ShotState::pending;
      if (a.verdict == Verdict::retry) {
        save(*shot, Sync::yes);
        if (shot->submit_attempts >= config_.retry.max_attempts) {
          end(*shot, ShotState::held,
              "submit failed " + std::to_string(shot->submit_attempts) + " times, last: " + a.message);
          return;
        }
        shot->due_ms = mono_ms(now + backoff(shot->submit_attempts - 1));
        spdlog::warn("{}: submit not accepted ({}), retrying", key, a.message);
        return;
      }
      // Not the shot's fault: the attempt does not count, and every submit waits.
      --shot->submit_attempts;
      save(*shot, Sync::yes);
      if (a.verdict == Verdict::credits) {
        credits_wait_ = true;
        next_credit_check_ = std::min(next_credit_check_,
                                      now + std::min(Millis(30000), seconds(config_.credits.check_interval_seconds)));
        spdlog::warn("{}; submits wait until the balance covers the next shot", a.message);
        return;
      }
      MonoPoint until;
      if (a.verdict == Verdict::rate_limited) {
        bucket_.on_rate_limited(now);
        until = now + backoff(consecutive_429_++);
        submits_blocked_reason_ = "rate limited (429)";
      } else {
        until = now + Millis(60000);
        submits_blocked_reason_ = "the API key was refused (" + a.message + ")";
      }
      if (a.reset_at) until = std::max(until, mono_until(*a.reset_at, wall, now));
      submits_blocked_until_ = std::max(submits_blocked_until_, until);
      if (a.verdict == Verdict::auth)
        spdlog::error("the API key was refused ({}); submits paused for a minute. Fix the key.", a.message);
      else
        spdlog::warn("rate limited: submits wait until {}, rate now {:.1f}/min",
                     iso8601_utc(wall + std::chrono::duration_cast<Millis>(until - now)),
                     bucket_.current_per_minute());
      return;
    }
  }
}

void Scheduler::start_api_get(Shot& shot, std::string url,
                              void (Scheduler::*on_answer)(const std::string&, const HttpResponse&)) {
  std::string key = shot.key();
  busy_.insert(key);
  transport_.start(api_request(std::move(url)), [this, key, on_answer](HttpResponse r) {
    busy_.erase(key);
    (this->*on_answer)(key, r);
  });
}

void Scheduler::on_poll(const std::string& key, const HttpResponse& r) {
  Shot* shot = find(key);
  if (!shot) return;
  const int64_t now = mono_ms(mono_());
  StatusAnswer a = classify_status(r);
  switch (a.verdict) {
    case Verdict::ok: {
      shot->attempts = 0;
      if (a.status == "PROCESSING" && !processing_seen_ms_.count(key))
        processing_seen_ms_[key] = now;
      if (a.status == "COMPLETED") {
        auto seen = processing_seen_ms_.find(key);
        double took = static_cast<double>(now - (seen != processing_seen_ms_.end() ? seen->second : shot->followed_since_ms));
        expected_render_ms_ = expected_render_ms_ == 0 ? took : 0.8 * expected_render_ms_ + 0.2 * took;
        shot->state = ShotState::fetching;
        shot->completed_ms = to_epoch_ms(wall_());
        shot->remote_status = a.status;
        shot->due_ms = 0;
        save(*shot);
        crash_point("status_change");
        return;
      }
      bool changed = shot->remote_status != a.status;
      shot->remote_status = a.status;
      shot->due_ms = now + poll_interval(*shot, now).count();
      if (changed) save(*shot);
      return;
    }
    default:
      on_follow_problem(*shot, "status", a.verdict, a.message, a.reset_at);
      return;
  }
}

void Scheduler::on_follow_problem(Shot& shot, const char* step, Verdict verdict, const std::string& message,
                                  const std::optional<TimePoint>& reset_at) {
  const TimePoint wall = wall_();
  switch (verdict) {
    case Verdict::failed:
      shot.remote_status = "FAILED";
      shot.completed_ms = to_epoch_ms(wall);
      end(shot, ShotState::failed, message);
      return;
    case Verdict::not_found: {
      std::string why = "expired: the provider no longer knows request " + shot.request_id +
                        " (records are kept about an hour); the job may have completed and been billed";
      if (config_.on_expired == OnExpired::resubmit) {
        spdlog::warn("{}: {}; resubmitting (on_expired: resubmit)", shot.key(), why);
        Shot copy = shot;
        busy_.erase(copy.key());
        requeue(copy, "expired_resubmit", "resubmitted after " + why);
        return;
      }
      end(shot, ShotState::held, why);
      return;
    }
    case Verdict::bug:
      retry_later(shot, std::string(step) + ": " + message, true);
      return;
    default:  // network, 5xx, 429, auth: following a job is always safe to retry
      retry_later(shot, std::string(step) + ": " + message, false);
      if (reset_at) shot.due_ms = std::max(shot.due_ms, mono_ms(mono_until(*reset_at, wall, mono_())));
      return;
  }
}

void Scheduler::on_fetch(const std::string& key, const HttpResponse& r) {
  Shot* shot = find(key);
  if (!shot) return;
  ResultAnswer a = classify_result(r);
  if (a.verdict != Verdict::ok) {
    on_follow_problem(*shot, "result", a.verdict, a.message, a.reset_at);
    return;
  }
  shot->attempts = 0;
  shot->output_url = a.output_url;
  // A result fetched again (the output URL had gone) is not spent again.
  if (a.cost && !shot->cost) {
    cost_.observe(shot->spec, *a.cost);
    batch_spent_[shot->batch] += *a.cost;
    daily_spent_[local_day(wall_())] += *a.cost;
    spent_since_balance_ += *a.cost;
  }
  if (a.cost) shot->cost = a.cost;
  if (a.remaining_credits) set_balance(*a.remaining_credits);
  shot->metrics_json = a.metrics_json;
  shot->state = ShotState::downloading;
  shot->due_ms = 0;
  save(*shot, Sync::yes);
}

void Scheduler::start_download(Shot& shot, MonoPoint now) {
  int fd = -1;
  long long offset = 0;
  try {
    // A retry after a partial download resumes it with a Range request.
    fd = output_.open_part(shot.batch, shot.spec.id, shot.attempts > 0, offset);
  } catch (const Error& e) {
    // The output share is missing or unwritable: wait, never lose the shot.
    std::string reason = std::string("waiting for the output folder: ") + e.what();
    if (reason != shot.reason) {
      shot.reason = reason;
      save(shot);
      spdlog::warn("{}: {}", shot.key(), shot.reason);
    }
    shot.due_ms = mono_ms(now + std::min(backoff(shot.attempts++), Millis(30000)));
    return;
  }
  HttpRequest req;
  crash_point("download_start");
  req.url = shot.output_url;
  req.sink_fd = fd;
  req.resume_from = offset;
  req.max_body_bytes = config_.limits.max_download_bytes - offset;
  req.max_redirects = 5;
  req.timeout = Millis(0);
  req.connect_timeout = seconds(config_.api.connect_timeout_seconds);
  // A trickle must not hold a download slot forever: a speed floor, and a
  // deadline scaled to the announced size (else to kUnannouncedDownloadBytes).
  req.min_bytes_per_second = config_.limits.download_min_bytes_per_second;
  req.stall_time = seconds(config_.limits.download_stall_seconds);
  req.deadline_expected_bytes = std::min(req.max_body_bytes, kUnannouncedDownloadBytes);
  std::string key = shot.key();
  busy_.insert(key);
  ++downloads_on_wire_;
  transport_.start(std::move(req), [this, key, fd](HttpResponse r) {
    --downloads_on_wire_;
    busy_.erase(key);
    on_download(key, fd, r);
    ::close(fd);
  });
}

void Scheduler::on_download(const std::string& key, int fd, const HttpResponse& r) {
  Shot* shot = find(key);
  if (!shot) return;
  const MonoPoint now = mono_();
  if (r.error == NetError::local_write) {
    output_.discard_part(shot->batch, shot->spec.id);
    std::string reason = "waiting: cannot write the video: " + r.error_text;
    if (reason != shot->reason) {
      shot->reason = std::move(reason);
      save(*shot);  // `status` shows why it waits
    }
    shot->due_ms = mono_ms(now + std::min(backoff(shot->attempts++), Millis(60000)));
    spdlog::warn("{}: {} (will retry)", key, shot->reason);
    return;
  }
  bool complete = r.error == NetError::none && (r.status == 200 || (r.status == 206 && r.body_bytes > 0));
  if (!complete) {
    // A transfer cut short keeps its .part for a Range resume; anything else starts over.
    bool resumable = r.error == NetError::unknown_outcome || r.error == NetError::not_sent;
    if (!resumable) output_.discard_part(shot->batch, shot->spec.id);
    if (r.error == NetError::none && (r.status == 403 || r.status == 404 || r.status == 410) &&
        shot->attempts + 1 < config_.retry.max_attempts) {
      // The output URL has gone: ask for the result again (it may carry a fresh URL).
      ++shot->attempts;
      shot->state = ShotState::fetching;
      shot->due_ms = mono_ms(now + backoff(shot->attempts - 1));
      save(*shot);
      return;
    }
    retry_later(*shot, "download: " + error_message(r), true);
    return;
  }
  Mp4Check check = check_mp4_fd(fd);
  if (!check.ok) {
    output_.discard_part(shot->batch, shot->spec.id);
    retry_later(*shot, "downloaded file is not a valid MP4: " + check.error, true);
    return;
  }
  try {
    struct stat st {};
    ::fstat(fd, &st);
    VideoInfo video{static_cast<long long>(st.st_size), sha256_fd_hex(fd), check.has_audio};
    shot->file = output_.commit_part(shot->batch, shot->spec.id, fd);
    crash_point("renamed");
    output_.write_sidecar(shot->batch, shot->spec.id, sidecar_json(*shot, video, to_epoch_ms(wall_())));
  } catch (const Error& e) {
    shot->reason = std::string("waiting: cannot write the video: ") + e.what();
    save(*shot);
    shot->due_ms = mono_ms(now + std::min(backoff(shot->attempts++), Millis(60000)));
    spdlog::warn("{}: {} (will retry)", key, shot->reason);
    return;
  }
  end(*shot, ShotState::done, "");
  crash_point("done");
}

std::vector<Shot> Scheduler::target_shots(const std::string& target) const {
  auto slash = target.find('/');
  std::string batch = target.substr(0, slash);
  std::string id = slash == std::string::npos ? "" : target.substr(slash + 1);
  if (!is_valid_id(batch) || (slash != std::string::npos && !is_valid_id(id)))
    throw Error("'" + target + "' is not BATCH or BATCH/SHOT");
  if (!store_.batch(batch)) throw Error("no batch named '" + batch + "'");
  std::vector<Shot> out;
  for (auto& s : store_.shots(batch)) {
    auto live = shots_.find(s.key());
    if (id.empty() || s.spec.id == id) out.push_back(live != shots_.end() ? live->second : s);
  }
  if (out.empty()) throw Error("batch '" + batch + "' has no shot '" + id + "'");
  return out;
}

void Scheduler::requeue(Shot shot, const std::string& ledger_event, const std::string& reason) {
  auto entry = ledger_entry(shot, ledger_event, wall_());
  entry["previous_request_id"] = shot.request_id;
  entry["previous_state"] = to_string(shot.state);
  store_.append_ledger(entry);
  shot.state = ShotState::pending;
  shot.reason = reason;
  shot.request_id.clear();
  shot.remote_status.clear();
  shot.output_url.clear();
  shot.metrics_json.clear();
  shot.cost.reset();
  shot.file.clear();
  shot.attempts = 0;
  shot.submit_attempts = 0;
  shot.due_ms = 0;
  shot.submitted_ms = shot.completed_ms = 0;
  shot.held_from = ShotState::pending;
  store_.put_shot(shot, Sync::yes);
  reopen_batch(shot.batch);
  shots_[shot.key()] = std::move(shot);
}

Scheduler::OperatorResult Scheduler::retry(const std::string& target, Resubmit allow_resubmit) {
  OperatorResult r;
  for (auto& s : target_shots(target)) {
    if (s.damaged) {
      r.skipped.push_back(s.spec.id + ": its stored record was unreadable; render it again under a new batch name");
      continue;
    }
    if (s.state != ShotState::held && s.state != ShotState::failed && s.state != ShotState::rejected) {
      if (!id_is_batch(target)) r.skipped.push_back(s.spec.id + ": is " + to_string(s.state));
      continue;
    }
    // Resume where it stopped when the job can still be followed: a record
    // that expired can no longer be polled, but its output file lives on.
    bool expired = s.reason.rfind("expired", 0) == 0;
    bool ambiguous = s.reason.rfind("ambiguous submit", 0) == 0;  // whose job it is, is unknown
    ShotState resume = ShotState::pending;
    if (s.state == ShotState::held && !ambiguous && !s.request_id.empty() && is_plain_token(s.request_id)) {
      if (s.held_from == ShotState::downloading && !s.output_url.empty()) resume = ShotState::downloading;
      else if (!expired && (s.held_from == ShotState::in_flight || s.held_from == ShotState::fetching))
        resume = s.held_from;
    }
    if (resume != ShotState::pending) {
      spdlog::info("{}: resumed by an operator at {} (request_id {}), no new submit", s.key(), to_string(resume),
                   s.request_id);
      r.changed.push_back(s.spec.id);
      r.plan.push_back(s.spec.id + ": resumes at " + to_string(resume) + " (request_id " + s.request_id +
                       "), no new submit, no cost");
      resume_at(s, resume);
      continue;
    }
    std::string cost = format_credits(cost_.estimate(s.spec));
    if (allow_resubmit == Resubmit::no) {
      r.skipped.push_back(s.spec.id + ": needs a new submit, a new billed job (~" + cost +
                          " credits); not done: run again with --yes");
      continue;
    }
    spdlog::info("{}: retried by an operator (was {}), a new submit", s.key(), to_string(s.state));
    r.changed.push_back(s.spec.id);
    r.plan.push_back(s.spec.id + ": a new submit, a new billed job (~" + cost + " credits)");
    requeue(s, "operator_retry", "");
  }
  return r;
}

void Scheduler::resume_at(Shot shot, ShotState step) {
  auto entry = ledger_entry(shot, "operator_resume", wall_());
  entry["request_id"] = shot.request_id;
  entry["step"] = to_string(step);
  store_.append_ledger(entry);
  shot.state = step == ShotState::downloading && shot.output_url.empty() ? ShotState::fetching : step;
  shot.held_from = ShotState::pending;
  shot.reason.clear();
  shot.attempts = 0;
  shot.due_ms = 0;
  shot.followed_since_ms = mono_ms(mono_());
  store_.put_shot(shot, Sync::yes);
  reopen_batch(shot.batch);
  shots_[shot.key()] = std::move(shot);
}

void Scheduler::reopen_batch(const std::string& name) {
  if (batches_.count(name)) return;
  // Reopen a finished batch; its report is written again when it ends.
  if (auto b = store_.batch(name)) {
    b->finished = false;
    b->finished_ms = 0;
    store_.put_batch(*b);
    batches_[b->name] = *b;
    batch_spent_[b->name] = 0;
    for (const auto& s : store_.shots(b->name))
      if (s.cost) batch_spent_[b->name] += *s.cost;
  }
}

Scheduler::OperatorResult Scheduler::cancel(const std::string& target) {
  OperatorResult r;
  for (auto& s : target_shots(target)) {
    if (is_terminal(s.state)) {
      if (!id_is_batch(target)) r.skipped.push_back(s.spec.id + ": already " + to_string(s.state));
      continue;
    }
    Shot* live = find(s.key());
    if (!live) continue;
    if (live->state == ShotState::submitting) {
      r.skipped.push_back(s.spec.id + ": a submit is on the wire; try again in a moment");
      continue;
    }
    std::string why = "cancelled by an operator";
    if (!live->request_id.empty())
      why += "; the provider's job " + live->request_id + " cannot be cancelled and may still be billed";
    r.changed.push_back(s.spec.id);
    if (live->state == ShotState::downloading) output_.discard_part(live->batch, live->spec.id);
    end(*live, ShotState::cancelled, why);
  }
  return r;
}

void Scheduler::maybe_finish(const std::string& batch) {
  if (!batches_.count(batch)) return;
  for (const auto& [key, s] : shots_)
    if (s.batch == batch) return;
  finishing_.insert(batch);
  finish_pending_batches();
}

void Scheduler::finish_pending_batches() {
  for (auto it = finishing_.begin(); it != finishing_.end();) {
    const std::string name = *it;
    auto b = batches_.find(name);
    bool open = b == batches_.end() ||
                std::any_of(shots_.begin(), shots_.end(), [&](const auto& kv) { return kv.second.batch == name; });
    if (open) {
      it = finishing_.erase(it);
      continue;
    }
    BatchRecord rec = b->second;
    int64_t now_ms = to_epoch_ms(wall_());
    try {
      output_.write(name, "report.json", batch_report_json(rec, store_.shots(name), now_ms));
    } catch (const Error& e) {
      spdlog::warn("batch {}: cannot write its report yet: {}", name, e.what());
      ++it;
      continue;
    }
    rec.finished = true;
    rec.finished_ms = now_ms;
    store_.put_batch(rec);
    batches_.erase(b);
    it = finishing_.erase(it);
    spdlog::info("batch {}: finished; report in {}", name, join_path(output_.root(), name + "/report.json"));
    if (on_batch_finished) on_batch_finished(rec);
  }
}

}  // namespace wb
