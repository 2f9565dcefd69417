#include "daemon/notifier.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "jobs/credits.h"
#include "jobs/json_safe.h"
#include "jobs/util.h"

namespace wb {

namespace {
using nlohmann::json;

constexpr const char* kOutboxMeta = "notify_outbox";
constexpr int64_t kGiveUpMs = 24ll * 3600 * 1000;
constexpr int64_t kFirstRetryMs = 5000;
constexpr int64_t kMaxRetryMs = 3600 * 1000;

// A webhook URL may carry a credential in its path (Slack's do): logs name the host only.
std::string host_of(const std::string& url) {
  size_t start = url.find("://");
  start = start == std::string::npos ? 0 : start + 3;
  size_t end = url.find_first_of("/?#", start);
  return url.substr(0, end == std::string::npos ? url.size() : end);
}

bool wants(const WebhookConfig& w, const std::string& event) {
  return std::find(w.events.begin(), w.events.end(), event) != w.events.end();
}
}  // namespace

std::string hmac_sha256_hex(const std::string& secret, const std::string& body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), reinterpret_cast<const unsigned char*>(body.data()),
       body.size(), mac, &len);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[mac[i] >> 4];
    out += hex[mac[i] & 15];
  }
  return out;
}

std::optional<BatchProgress> batch_progress(const Scheduler& scheduler, const std::string& batch) {
  const BatchRecord* record = scheduler.book().batch(batch);
  if (!record) return std::nullopt;
  return BatchProgress{record->shot_count, scheduler.book().open_in_batch(batch), scheduler.spent_in_batch(batch)};
}

Notifier::Notifier(const Config& config, Store& store, Transport& transport, WallMs wall_ms, ProgressFn progress)
    : config_(config), store_(store), transport_(transport), wall_ms_(std::move(wall_ms)), progress_(std::move(progress)) {}

namespace {
std::string delivery_json(uint64_t id, const std::string& url, const std::string& event, const std::string& format,
                          const std::string& body, int attempts, int64_t first_ms, int64_t next_ms) {
  return json({{"id", id}, {"url", url}, {"event", event}, {"format", format}, {"body", body},
               {"attempts", attempts}, {"first_ms", first_ms}, {"next_ms", next_ms}})
      .dump();
}
}  // namespace

void Notifier::persist(const Delivery& d) const {
  store_.update_notifications({{d.id, delivery_json(d.id, d.url, d.event, d.format, d.body, d.attempts, d.first_ms,
                                                    d.next_ms)}},
                              {});
}

void Notifier::add(Delivery d) {
  Endpoint& ep = endpoints_[d.url];
  ep.ids.insert(d.id);
  ep.next_ms = std::max(ep.next_ms, d.next_ms);
  next_id_ = std::max(next_id_, d.id + 1);
  outbox_.emplace(d.id, std::move(d));
}

void Notifier::remove(uint64_t id) {
  auto it = outbox_.find(id);
  if (it == outbox_.end()) return;
  auto ep = endpoints_.find(it->second.url);
  if (ep != endpoints_.end()) {
    ep->second.ids.erase(id);
    if (ep->second.ids.empty() && !ep->second.on_wire) endpoints_.erase(ep);
  }
  outbox_.erase(it);
}

void Notifier::load() {
  // A record of the wrong shape reads as no delivery (its url empty).
  auto parse = [](const json& e) {
    Delivery d;
    if (!e.is_object()) return d;
    try {
      d.id = e.value("id", uint64_t{0});
      d.url = e.value("url", "");
      d.event = e.value("event", "");
      d.format = e.value("format", "json");
      d.body = e.value("body", "");
      d.attempts = e.value("attempts", 0);
      d.first_ms = e.value("first_ms", int64_t{0});
      d.next_ms = e.value("next_ms", int64_t{0});
    } catch (const json::exception&) {
      d.url.clear();
    }
    return d;
  };
  size_t unreadable = 0;
  std::vector<uint64_t> bad;
  for (const auto& [id, text] : store_.notifications()) {
    auto j = parse_json_bounded(text);
    Delivery d;
    if (j) d = parse(*j);
    if (d.url.empty() || d.id != id) {
      ++unreadable;
      bad.push_back(id);
      continue;
    }
    add(std::move(d));
  }
  // Before one key each, the outbox was one list under meta/notify_outbox.
  if (auto text = store_.meta(kOutboxMeta); text && !text->empty()) {
    auto j = parse_json_bounded(*text);
    std::vector<std::pair<uint64_t, std::string>> puts;
    if (j && j->is_array()) {
      std::vector<Delivery> old;
      for (const auto& e : *j)
        if (Delivery d = parse(e); !d.url.empty()) old.push_back(std::move(d));
      for (auto& d : old) {
        d.id = next_id_++;
        puts.emplace_back(d.id, delivery_json(d.id, d.url, d.event, d.format, d.body, d.attempts, d.first_ms, d.next_ms));
        add(std::move(d));
      }
    } else {
      ++unreadable;
    }
    store_.update_notifications(puts, {});
    store_.put_meta(kOutboxMeta, "");
  }
  if (unreadable) spdlog::error("notifications: {} stored deliveries are unreadable and are lost", unreadable);
  if (!bad.empty()) store_.update_notifications({}, bad);
  // A smaller notify.max_pending than the last run's: the oldest go.
  std::vector<uint64_t> over;
  while (outbox_.size() > static_cast<size_t>(std::max(config_.notify.max_pending, 1))) {
    over.push_back(outbox_.begin()->first);
    remove(outbox_.begin()->first);
  }
  if (!over.empty()) {
    store_.update_notifications({}, over);
    dropped_ += over.size();
    spdlog::warn("notifications: {} oldest deliveries dropped: more than notify.max_pending ({}) were kept",
                 over.size(), config_.notify.max_pending);
  }
  if (!outbox_.empty()) spdlog::info("notifications: {} deliveries from before the restart", outbox_.size());
}

std::string Notifier::summary_json(const std::string& batch, const std::string& event) const {
  auto record = store_.batch(batch);
  MicroCredits spent = 0;
  std::map<std::string, int> states;
  int shots = 0;
  store_.each_shot(batch, [&](const Shot& s) {  // a big batch's records are never all held
    if (s.cost) spent += to_micro(*s.cost);
    ++states[to_string(s.state)];
    ++shots;
  });
  bool success = shots > 0 && states["DONE"] == shots;
  std::erase_if(states, [](const auto& kv) { return kv.second == 0; });
  const std::string dir = join_path(config_.output_root, batch);
  int64_t finished = record && record->finished_ms ? record->finished_ms : wall_ms_();
  json j = {{"event", event},
            {"batch", batch},
            {"state", success ? "success" : "failure"},
            {"shots", shots},
            {"states", states},
            {"credits_spent", credits_json(spent)},
            {"finished_at", iso8601_utc(from_epoch_ms(finished))},
            {"report", join_path(dir, "report.json")},
            {"contact_sheet", join_path(dir, "index.html")}};
  if (record && record->budget_credits) j["budget_credits"] = *record->budget_credits;
  return json_text(j, -1);
}

void Notifier::on_event(const Event& e) {
  if (e.kind == Event::Kind::batch_finished) {
    // Once per batch, like its report: the one summary that reads every shot.
    std::string summary = summary_json(e.key, "batch_finished");
    auto j = json::parse(summary);
    std::string state = j["state"].get<std::string>();
    std::string counts;
    for (auto& [name, n] : j["states"].items()) counts += (counts.empty() ? "" : ", ") + name + " " + n.dump();
    enqueue("batch_finished", summary,
            "wanbatch: batch " + e.key + " finished (" + state + "): " + std::to_string(j["shots"].get<int>()) +
                " shots, " + counts + "; " + j["credits_spent"].dump() + " credits spent. Contact sheet: " +
                j["contact_sheet"].get<std::string>());
    if (!config_.notify.command.empty()) run_command(e.key, summary, state, "batch_finished");
  } else if (e.kind == Event::Kind::shot_changed && e.to == ShotState::held) {
    bool wanted = false;
    for (const auto& w : config_.notify.webhooks) wanted = wanted || wants(w, "shot_held");
    if (!wanted) return;
    // O(1): what the engine keeps of the batch, never its shots (a burst of
    // HELD shots in a large batch would read the batch once per shot).
    const std::string batch = e.key.substr(0, e.key.find('/'));
    json j = {{"event", "shot_held"},
              {"batch", batch},
              {"shot", e.key.substr(e.key.find('/') + 1)},
              {"reason", e.reason},
              {"at", iso8601_utc(from_epoch_ms(wall_ms_()))},
              {"contact_sheet", join_path(join_path(config_.output_root, batch), "index.html")}};
    if (auto p = progress_ ? progress_(batch) : std::nullopt) {
      j["shots"] = p->shots;
      j["unfinished"] = p->unfinished;
      j["credits_spent"] = credits_json(p->spent);
    }
    enqueue("shot_held", json_text(j, -1), "wanbatch: shot " + e.key + " is HELD: " + e.reason);
  } else if (e.kind == Event::Kind::shot_stuck) {
    on_stuck(e);
  } else if (e.kind == Event::Kind::balance_read && config_.notify.credits_low_below > 0) {
    bool low = e.credits < config_.notify.credits_low_below;
    if (low && !credits_low_) {
      json j = {{"event", "credits_low"},
                {"credits", credits_json(to_micro(e.credits))},
                {"threshold", config_.notify.credits_low_below},
                {"at", iso8601_utc(from_epoch_ms(wall_ms_()))}};
      enqueue("credits_low", json_text(j, -1),
              "wanbatch: the credit balance is " + credits_text(to_micro(e.credits)) + ", under " +
                  credits_text(to_micro(config_.notify.credits_low_below)));
    }
    credits_low_ = low;
  }
}

void Notifier::enqueue(const std::string& event, const std::string& json_body, const std::string& text) {
  std::vector<std::pair<uint64_t, std::string>> puts;
  std::vector<uint64_t> erases;
  const int64_t now = wall_ms_();
  const size_t cap = static_cast<size_t>(std::max(config_.notify.max_pending, 1));
  for (const auto& w : config_.notify.webhooks) {
    if (!wants(w, event)) continue;
    // Full: the oldest delivery not on the wire goes, so the newest news gets through.
    while (outbox_.size() >= cap) {
      auto victim = std::find_if(outbox_.begin(), outbox_.end(), [&](const auto& kv) {
        auto ep = endpoints_.find(kv.second.url);
        return ep == endpoints_.end() || !ep->second.on_wire || *ep->second.ids.begin() != kv.first;
      });
      if (victim == outbox_.end()) break;
      if (!drop_logged_ms_ || now - *drop_logged_ms_ >= 60000 || now < *drop_logged_ms_) {
        spdlog::warn("notifications: the outbox holds notify.max_pending ({}) deliveries; the oldest ({} to {}, {} "
                     "attempts) and {} before it since the last warning are dropped",
                     cap, victim->second.event, host_of(victim->second.url), victim->second.attempts, dropped_unlogged_);
        drop_logged_ms_ = now;
        dropped_unlogged_ = 0;
      } else {
        ++dropped_unlogged_;
      }
      ++dropped_;
      if (on_dropped) on_dropped();
      erases.push_back(victim->first);
      std::erase_if(puts, [&](const auto& p) { return p.first == victim->first; });
      remove(victim->first);
    }
    Delivery d;
    d.id = next_id_++;
    d.url = w.url;
    d.event = event;
    d.format = w.format;
    if (w.format == "slack") d.body = json({{"text", text}}).dump();
    else if (w.format == "discord") d.body = json({{"content", text.substr(0, 2000)}}).dump();
    else d.body = json_body;
    d.first_ms = d.next_ms = now;
    puts.emplace_back(d.id, delivery_json(d.id, d.url, d.event, d.format, d.body, 0, d.first_ms, d.next_ms));
    add(std::move(d));
  }
  if (!puts.empty() || !erases.empty()) store_.update_notifications(puts, erases);
}

size_t Notifier::on_the_wire() const {
  size_t n = 0;
  for (const auto& [url, ep] : endpoints_) n += ep.on_wire;
  return n;
}

bool Notifier::take_token(int64_t now) {
  if (now > tokens_ms_) {
    tokens_ = std::min<double>(kBurst, tokens_ + static_cast<double>(now - tokens_ms_) * kStartsPerSecond / 1000.0);
    tokens_ms_ = now;
  } else if (now < tokens_ms_) {
    tokens_ms_ = now;  // the wall clock stepped back: count from here
  }
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

int64_t Notifier::next_attempt_ms() const {
  int64_t next = std::numeric_limits<int64_t>::max();
  for (const auto& [url, ep] : endpoints_)
    if (!ep.on_wire && !ep.ids.empty()) next = std::min(next, ep.next_ms);
  if (next == std::numeric_limits<int64_t>::max() || tokens_ >= 1) return next;
  const int64_t token_ms = tokens_ms_ + static_cast<int64_t>(std::ceil((1 - tokens_) * 1000.0 / kStartsPerSecond));
  return std::max(next, token_ms);
}

void Notifier::tick() {
  const int64_t now = wall_ms_();
  // Given up: the oldest of each endpoint first (ids grow with time).
  std::vector<uint64_t> expired;
  for (auto& [url, ep] : endpoints_) {
    for (uint64_t id : ep.ids) {
      const Delivery& d = outbox_.at(id);
      if (now - d.first_ms <= kGiveUpMs) break;
      if (ep.on_wire && id == *ep.ids.begin()) continue;
      expired.push_back(id);
    }
  }
  for (uint64_t id : expired) {
    const Delivery& d = outbox_.at(id);
    spdlog::error("notification {} to {} dropped: not delivered in 24 h ({} attempts)", d.event, host_of(d.url),
                  d.attempts);
    remove(id);
  }
  if (!expired.empty()) store_.update_notifications({}, expired);
  // Due endpoints, the one that waited longest first, each one delivery at a time.
  std::vector<std::pair<int64_t, std::string>> due;
  for (auto& [url, ep] : endpoints_)
    if (!ep.on_wire && !ep.ids.empty() && ep.next_ms <= now) due.emplace_back(ep.last_start_ms, url);
  std::sort(due.begin(), due.end());
  for (const auto& [last, url] : due) {
    if (!take_token(now)) break;
    Endpoint& ep = endpoints_.at(url);
    ep.last_start_ms = now;
    send(outbox_.at(*ep.ids.begin()), now);
  }
  for (auto it = commands_.begin(); it != commands_.end();) {
    if (!it->child->step(std::chrono::milliseconds(0))) {
      ++it;
      continue;
    }
    const auto& r = it->child->result();
    if (r.ok()) spdlog::info("batch {}: notify.command ran", it->batch);
    else spdlog::warn("batch {}: notify.command failed: {}", it->batch, r.describe());
    it = commands_.erase(it);
  }
}

void Notifier::send(Delivery& d, int64_t /*now*/) {
  HttpRequest req;
  req.method = "POST";
  req.url = d.url;
  req.body = d.body;
  req.headers = {"Content-Type: application/json", "User-Agent: wanbatch", "X-Wanbatch-Event: " + d.event};
  for (const auto& w : config_.notify.webhooks)
    if (w.url == d.url && !w.secret.empty()) {
      req.headers.push_back("X-Wanbatch-Signature: sha256=" + hmac_sha256_hex(w.secret, d.body));
      break;
    }
  req.timeout = std::chrono::milliseconds(30000);
  req.max_body_bytes = 64 << 10;
  endpoints_[d.url].on_wire = true;
  const uint64_t id = d.id;
  const std::string url = d.url;
  transport_.start(std::move(req), [this, id, url](const HttpResponse& r) {
    Endpoint& ep = endpoints_[url];
    ep.on_wire = false;
    auto it = outbox_.find(id);
    if (r.error == NetError::none && r.status >= 200 && r.status < 300) {
      ep.failures = 0;
      ep.next_ms = 0;
      if (it == outbox_.end()) return;
      spdlog::info("notification {} delivered to {}", it->second.event, host_of(url));
      remove(id);
      store_.update_notifications({}, {id});
      return;
    }
    ++ep.failures;
    const int64_t delay = std::min(kMaxRetryMs, kFirstRetryMs << std::min(ep.failures - 1, 20));
    ep.next_ms = wall_ms_() + delay;
    if (it == outbox_.end()) {
      if (ep.ids.empty()) endpoints_.erase(url);
      return;
    }
    Delivery& d = it->second;
    ++d.attempts;
    d.next_ms = ep.next_ms;
    spdlog::warn("notification {} to {} not delivered ({}); attempt {}, next in {} s ({} waiting for it)", d.event,
                 host_of(url), r.error == NetError::none ? "HTTP " + std::to_string(r.status) : r.error_text,
                 d.attempts, delay / 1000, ep.ids.size());
    persist(d);
  });
}

void Notifier::on_stuck(const Event& e) {
  const std::string batch = e.key.substr(0, e.key.find('/'));
  auto j = json::parse(summary_json(batch, "shot_stuck"));
  j["shot"] = e.key.substr(e.key.find('/') + 1);
  j["reason"] = e.reason;
  if (auto s = store_.shot(batch, j["shot"].get<std::string>())) j["request_id"] = s->request_id;
  j["in_flight_seconds"] = std::lround(e.render_seconds.value_or(0));
  j["stuck_after_seconds"] = std::lround(e.queue_seconds.value_or(0));
  std::string body = json_text(j, -1);
  enqueue("shot_stuck", body, "wanbatch: shot " + e.key + " is stuck: " + e.reason);
  if (!config_.notify.command.empty()) run_command(batch, body, "stuck", "shot_stuck");
}

void Notifier::run_command(const std::string& batch, const std::string& summary, const std::string& state,
                           const std::string& event) {
  SubprocessSpec spec;
  spec.argv = config_.notify.command;
  spec.env = helper_env({"WANBATCH_BATCH=" + batch, "WANBATCH_STATE=" + state, "WANBATCH_EVENT=" + event});
  spec.stdin_data = summary + "\n";
  spec.timeout = std::chrono::milliseconds(static_cast<int64_t>(config_.notify.command_timeout_seconds * 1000));
  spec.max_output_bytes = 64 << 10;
  auto child = std::make_unique<Child>();
  if (!child->start(spec)) {
    spdlog::warn("batch {}: notify.command could not run: {}", batch, child->result().error);
    return;
  }
  commands_.push_back({batch, std::move(child)});
}

}  // namespace wb
