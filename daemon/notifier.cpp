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

Notifier::Notifier(const Config& config, Store& store, Transport& transport, WallMs wall_ms)
    : config_(config), store_(store), transport_(transport), wall_ms_(std::move(wall_ms)) {}

void Notifier::load() {
  auto text = store_.meta(kOutboxMeta);
  if (!text || text->empty()) return;
  auto j = parse_json_bounded(*text);
  if (!j || !j->is_array()) {
    spdlog::error("notifications: the stored outbox is unreadable; its deliveries are lost");
    return;
  }
  for (const auto& e : *j) {
    if (!e.is_object()) continue;
    Delivery d;
    d.id = e.value("id", uint64_t{0});
    d.url = e.value("url", "");
    d.event = e.value("event", "");
    d.format = e.value("format", "json");
    d.body = e.value("body", "");
    d.attempts = e.value("attempts", 0);
    d.first_ms = e.value("first_ms", int64_t{0});
    d.next_ms = e.value("next_ms", int64_t{0});
    next_id_ = std::max(next_id_, d.id + 1);
    if (!d.url.empty()) outbox_.push_back(std::move(d));
  }
  if (!outbox_.empty()) spdlog::info("notifications: {} deliveries from before the restart", outbox_.size());
}

void Notifier::save() const {
  json j = json::array();
  for (const auto& d : outbox_)
    j.push_back({{"id", d.id}, {"url", d.url}, {"event", d.event}, {"format", d.format}, {"body", d.body},
                 {"attempts", d.attempts}, {"first_ms", d.first_ms}, {"next_ms", d.next_ms}});
  store_.put_meta(kOutboxMeta, j.dump());
}

std::string Notifier::summary_json(const std::string& batch, const std::string& event) const {
  auto record = store_.batch(batch);
  std::vector<Shot> shots = store_.shots(batch);
  MicroCredits spent = 0;
  for (const auto& s : shots)
    if (s.cost) spent += to_micro(*s.cost);
  auto states = count_states(shots);
  bool success = !shots.empty() && states["DONE"] == static_cast<int>(shots.size());
  std::erase_if(states, [](const auto& kv) { return kv.second == 0; });
  const std::string dir = join_path(config_.output_root, batch);
  int64_t finished = record && record->finished_ms ? record->finished_ms : wall_ms_();
  json j = {{"event", event},
            {"batch", batch},
            {"state", success ? "success" : "failure"},
            {"shots", static_cast<int>(shots.size())},
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
    std::string batch = e.key.substr(0, e.key.find('/'));
    auto j = json::parse(summary_json(batch, "shot_held"));
    j["shot"] = e.key.substr(e.key.find('/') + 1);
    j["reason"] = e.reason;
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
  bool any = false;
  for (const auto& w : config_.notify.webhooks) {
    if (!wants(w, event)) continue;
    Delivery d;
    d.id = next_id_++;
    d.url = w.url;
    d.event = event;
    d.format = w.format;
    if (w.format == "slack") d.body = json({{"text", text}}).dump();
    else if (w.format == "discord") d.body = json({{"content", text.substr(0, 2000)}}).dump();
    else d.body = json_body;
    d.first_ms = d.next_ms = wall_ms_();
    outbox_.push_back(std::move(d));
    any = true;
  }
  if (any) save();
}

int64_t Notifier::next_attempt_ms() const {
  int64_t next = std::numeric_limits<int64_t>::max();
  for (const auto& d : outbox_)
    if (!d.on_wire) next = std::min(next, d.next_ms);
  return next;
}

void Notifier::tick() {
  const int64_t now = wall_ms_();
  bool changed = false;
  for (auto it = outbox_.begin(); it != outbox_.end();) {
    if (!it->on_wire && now - it->first_ms > kGiveUpMs) {
      spdlog::error("notification {} to {} dropped: not delivered in 24 h ({} attempts)", it->event, host_of(it->url),
                    it->attempts);
      it = outbox_.erase(it);
      changed = true;
      continue;
    }
    if (!it->on_wire && it->next_ms <= now) send(*it);
    ++it;
  }
  if (changed) save();
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

void Notifier::send(Delivery& d) {
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
  d.on_wire = true;
  const uint64_t id = d.id;
  transport_.start(std::move(req), [this, id](const HttpResponse& r) {
    auto it = std::find_if(outbox_.begin(), outbox_.end(), [id](const Delivery& x) { return x.id == id; });
    if (it == outbox_.end()) return;
    it->on_wire = false;
    ++it->attempts;
    if (r.error == NetError::none && r.status >= 200 && r.status < 300) {
      spdlog::info("notification {} delivered to {}", it->event, host_of(it->url));
      outbox_.erase(it);
    } else {
      int64_t delay = std::min(kMaxRetryMs, kFirstRetryMs << std::min(it->attempts - 1, 20));
      it->next_ms = wall_ms_() + delay;
      spdlog::warn("notification {} to {} not delivered ({}); attempt {}, next in {} s", it->event, host_of(it->url),
                   r.error == NetError::none ? "HTTP " + std::to_string(r.status) : r.error_text, it->attempts,
                   delay / 1000);
    }
    save();
  });
}

void Notifier::on_stuck(const Event& e) {
  const std::string batch = e.key.substr(0, e.key.find('/'));
  auto j = json::parse(summary_json(batch, "shot_stuck"));
  j["shot"] = e.key.substr(e.key.find('/') + 1);
  j["reason"] = e.reason;
  for (const auto& s : store_.shots(batch))
    if (s.spec.id == j["shot"].get<std::string>()) j["request_id"] = s.request_id;
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
