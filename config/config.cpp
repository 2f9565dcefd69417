#include "config/config.h"

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>

#include "jobs/http.h"
#include "jobs/throttle.h"
#include "jobs/util.h"
#include "jobs/yaml_safe.h"

namespace wb {

namespace {

// Walks one mapping, dispatching known keys and refusing unknown ones.
class Section {
 public:
  Section(const YAML::Node& node, std::string prefix, const std::string& file)
      : node_(node), prefix_(std::move(prefix)), file_(file) {
    if (node_ && !node_.IsNull() && !node_.IsMap()) fail(prefix_.empty() ? "(top)" : prefix_, node_, "must be a mapping");
  }

  using Handler = std::function<void(const YAML::Node&, const std::string& key)>;
  void on(const std::string& key, Handler h) { handlers_[key] = std::move(h); }

  void run() {
    if (!node_ || node_.IsNull()) return;
    for (const auto& kv : node_) {
      std::string key = kv.first.as<std::string>();
      std::string full = prefix_.empty() ? key : prefix_ + "." + key;
      auto it = handlers_.find(key);
      if (it == handlers_.end()) fail(full, kv.first, "unknown key");
      it->second(kv.second, full);
    }
  }

  [[noreturn]] void fail(const std::string& key, const YAML::Node& at, const std::string& msg) const {
    throw Error(file_ + ":" + std::to_string(yaml_line(at)) + ": " + key + ": " + msg);
  }

  std::string str(const YAML::Node& n, const std::string& key) const {
    if (!n.IsScalar()) fail(key, n, "must be a string");
    return n.as<std::string>();
  }
  bool boolean(const YAML::Node& n, const std::string& key) const {
    bool v = false;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) fail(key, n, "must be true or false");
    return v;
  }
  long long integer(const YAML::Node& n, const std::string& key, long long lo, long long hi) const {
    long long v = 0;
    if (!n.IsScalar() || !YAML::convert<long long>::decode(n, v))
      fail(key, n, "must be an integer");
    if (v < lo || v > hi)
      fail(key, n, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    return v;
  }
  double number(const YAML::Node& n, const std::string& key, double lo, double hi) const {
    double v = 0;
    if (!n.IsScalar() || !YAML::convert<double>::decode(n, v)) fail(key, n, "must be a number");
    if (!(v >= lo && v <= hi)) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "must be between %g and %g", lo, hi);
      fail(key, n, buf);
    }
    return v;
  }
  std::string abs_path(const YAML::Node& n, const std::string& key) const {
    std::string p = str(n, key);
    if (p.empty() || p.front() != '/') fail(key, n, "must be an absolute path");
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    return p;
  }

 private:
  YAML::Node node_;
  std::string prefix_;
  const std::string& file_;
  std::map<std::string, Handler> handlers_;
};


// metrics.listen: HOST:PORT, HOST an IPv4 address, PORT 0..65535 (0: any free
// port). Returns the problem, or "" when it is valid.
std::string listen_problem(const std::string& v) {
  const std::string form = "must be HOST:PORT with an IPv4 address (127.0.0.1:9464, 0.0.0.0:9464) or "
                           "\"\" to turn the endpoint off, got '" + v + "'";
  auto colon = v.rfind(':');
  if (colon == std::string::npos || colon == 0) return form;
  std::string host = v.substr(0, colon), port = v.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(port) > 65535)
    return form;
  if (host.front() == '[')  // the metrics server (daemon/metrics_http.h) listens on IPv4 only
    return "must be an IPv4 address: the metrics server cannot listen on IPv6; use "
           "127.0.0.1:" + port + " or 0.0.0.0:" + port + ", got '" + v + "'";
  int parts = 0;
  size_t at = 0;
  while (at <= host.size()) {
    size_t dot = host.find('.', at);
    std::string part = host.substr(at, dot == std::string::npos ? std::string::npos : dot - at);
    if (part.empty() || part.size() > 3 || part.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(part) > 255)
      return form;
    ++parts;
    if (dot == std::string::npos) break;
    at = dot + 1;
  }
  return parts == 4 ? "" : form;
}

}  // namespace

Config parse_config(const std::string& text, const std::string& path) {
  YAML::Node root;
  YamlError yerr;
  if (!load_yaml_safely(text, YamlLimits{10000, 16}, root, yerr))
    throw Error(path + ":" + std::to_string(yerr.line) + ": " + yerr.message);

  Config c;
  c.path = path;
  Section top(root, "", path);
  top.on("api", [&](const YAML::Node& n, const std::string& k) {
    Section s(n, k, path);
    s.on("base_url", [&](auto& v, auto& key) { c.api.base_url = s.str(v, key); });
    s.on("storage_url", [&](auto& v, auto& key) { c.api.storage_url = s.str(v, key); });
    s.on("model", [&](auto& v, auto& key) {
      c.api.model = s.str(v, key);
      if (!is_valid_id(c.api.model)) s.fail(key, v, "must match [A-Za-z0-9._-]{1,64}");
    });
    s.on("key_env", [&](auto& v, auto& key) { c.api.key_env = s.str(v, key); });
    s.on("key_file", [&](auto& v, auto& key) { c.api.key_file = s.str(v, key); });
    s.on("allow_loopback_http", [&](auto& v, auto& key) { c.api.allow_loopback_http = s.boolean(v, key); });
    s.on("request_timeout_seconds", [&](auto& v, auto& key) { c.api.request_timeout_seconds = s.number(v, key, 1, 3600); });
    s.on("connect_timeout_seconds", [&](auto& v, auto& key) { c.api.connect_timeout_seconds = s.number(v, key, 1, 600); });
    s.run();
    for (auto [name, url] : {std::pair{"api.base_url", c.api.base_url}, {"api.storage_url", c.api.storage_url}}) {
      if (!url_allowed(url, c.api.allow_loopback_http))
        s.fail(name, n, "must be an https URL (plain http only to 127.0.0.1 with api.allow_loopback_http: true), got '" + url + "'");
    }
  });
  top.on("spool", [&](const YAML::Node& n, const std::string& k) {
    Section s(n, k, path);
    s.on("incoming", [&](auto& v, auto& key) { c.spool.incoming = s.abs_path(v, key); });
    s.on("active", [&](auto& v, auto& key) { c.spool.active = s.abs_path(v, key); });
    s.on("done", [&](auto& v, auto& key) { c.spool.done = s.abs_path(v, key); });
    s.on("failed", [&](auto& v, auto& key) { c.spool.failed = s.abs_path(v, key); });
    s.on("settle_seconds", [&](auto& v, auto& key) { c.spool.settle_seconds = s.number(v, key, 0, 3600); });
    s.run();
  });
  top.on("state_dir", [&](auto& v, auto& key) { c.state_dir = top.abs_path(v, key); });
  top.on("output_root", [&](auto& v, auto& key) { c.output_root = top.abs_path(v, key); });
  top.on("input_roots", [&](const YAML::Node& v, const std::string& key) {
    if (!v.IsSequence()) top.fail(key, v, "must be a list of absolute paths");
    for (const auto& item : v) c.input_roots.push_back(top.abs_path(item, key));
  });
  top.on("limits", [&](const YAML::Node& n, const std::string& k) {
    Section s(n, k, path);
    auto& l = c.limits;
    s.on("max_in_flight", [&](auto& v, auto& key) { l.max_in_flight = static_cast<int>(s.integer(v, key, 1, 10000)); });
    s.on("max_shots_per_manifest", [&](auto& v, auto& key) { l.max_shots_per_manifest = static_cast<int>(s.integer(v, key, 1, 100000)); });
    s.on("max_manifest_bytes", [&](auto& v, auto& key) { l.max_manifest_bytes = s.integer(v, key, 1024, 64ll << 20); });
    s.on("max_media_bytes", [&](auto& v, auto& key) { l.max_media_bytes = s.integer(v, key, 1024, 1ll << 30); });
    s.on("max_download_bytes", [&](auto& v, auto& key) { l.max_download_bytes = s.integer(v, key, 1024, 64ll << 30); });
    s.on("max_concurrent_uploads", [&](auto& v, auto& key) { l.max_concurrent_uploads = static_cast<int>(s.integer(v, key, 1, 64)); });
    s.on("max_concurrent_downloads", [&](auto& v, auto& key) { l.max_concurrent_downloads = static_cast<int>(s.integer(v, key, 1, 256)); });
    s.on("download_min_bytes_per_second", [&](auto& v, auto& key) { l.download_min_bytes_per_second = s.integer(v, key, 1, 1ll << 30); });
    s.on("download_stall_seconds", [&](auto& v, auto& key) { l.download_stall_seconds = static_cast<int>(s.integer(v, key, 1, 3600)); });
    s.on("submits_per_minute", [&](auto& v, auto& key) { l.submits_per_minute = s.number(v, key, 0.1, 100000); });
    s.on("submit_window_seconds", [&](auto& v, auto& key) { l.submit_window_seconds = s.number(v, key, 0.01, 600); });
    s.on("credit_reserve", [&](auto& v, auto& key) { l.credit_reserve = s.number(v, key, 0, 1e12); });
    s.on("daily_budget_credits", [&](auto& v, auto& key) { l.daily_budget_credits = s.number(v, key, 0, 1e12); });
    s.on("requests_per_minute", [&](auto& v, auto& key) {
      l.requests_per_minute = s.number(v, key, 0, 1e6);
      if (l.requests_per_minute > 0 && l.requests_per_minute < 1) s.fail(key, v, "must be 0 (no budget) or at least 1");
    });
    s.run();
  });
  top.on("pricing", [&](const YAML::Node& n, const std::string& k) {
    Section s(n, k, path);
    s.on("credits_per_second_720p", [&](auto& v, auto& key) { c.pricing.credits_per_second_720p = s.number(v, key, 0, 1e6); });
    s.on("credits_per_second_1080p", [&](auto& v, auto& key) { c.pricing.credits_per_second_1080p = s.number(v, key, 0, 1e6); });
    s.run();
  });
  top.on("credits", [&](const YAML::Node& n, const std::string& k) {
    Section s(n, k, path);
    s.on("check_interval_seconds", [&](auto& v, auto& key) { c.credits.check_interval_seconds = s.number(v, key, 0.1, 86400); });
    s.run();
  });
  top.on("schedule", [&](const YAML::Node& n, const std::string& k) {
    Section s(n, k, path);
    s.on("window", [&](auto& v, auto& key) {
      c.window = s.str(v, key);
      std::string err;
      if (!TimeWindow::parse(c.window, err)) s.fail(key, v, err);
    });
    s.run();
  });
  top.on("on_expired", [&](auto& v, auto& key) {
    std::string x = top.str(v, key);
    if (x == "hold") c.on_expired = OnExpired::hold;
    else if (x == "resubmit") c.on_expired = OnExpired::resubmit;
    else top.fail(key, v, "must be hold or resubmit");
  });
  top.on("poll", [&](const YAML::Node& n, const std::string& k) {
    Section s(n, k, path);
    s.on("min_interval_seconds", [&](auto& v, auto& key) { c.poll.min_interval_seconds = s.number(v, key, 0.01, 3600); });
    s.on("max_interval_seconds", [&](auto& v, auto& key) { c.poll.max_interval_seconds = s.number(v, key, 0.01, 3600); });
    s.on("target_delay_fraction", [&](auto& v, auto& key) { c.poll.target_delay_fraction = s.number(v, key, 0.001, 0.5); });
    s.on("prior_render_seconds", [&](auto& v, auto& key) { c.poll.prior_render_seconds = s.number(v, key, 0.01, 86400); });
    s.on("stuck_after_seconds", [&](auto& v, auto& key) { c.poll.stuck_after_seconds = s.number(v, key, 0, 7 * 86400); });
    s.run();
    if (c.poll.max_interval_seconds < c.poll.min_interval_seconds)
      s.fail("poll.max_interval_seconds", n, "must not be below poll.min_interval_seconds");
  });
  top.on("retry", [&](const YAML::Node& n, const std::string& k) {
    Section s(n, k, path);
    s.on("max_attempts", [&](auto& v, auto& key) { c.retry.max_attempts = static_cast<int>(s.integer(v, key, 1, 100)); });
    s.on("base_delay_seconds", [&](auto& v, auto& key) { c.retry.base_delay_seconds = s.number(v, key, 0.001, 3600); });
    s.on("max_delay_seconds", [&](auto& v, auto& key) { c.retry.max_delay_seconds = s.number(v, key, 0.001, 86400); });
    s.run();
  });
  top.on("metrics", [&](const YAML::Node& n, const std::string& k) {
    Section s(n, k, path);
    s.on("listen", [&](auto& v, auto& key) {
      c.metrics_listen = v.IsNull() ? "" : s.str(v, key);
      if (!c.metrics_listen.empty())
        if (std::string problem = listen_problem(c.metrics_listen); !problem.empty()) s.fail(key, v, problem);
    });
    s.run();
  });
  top.on("notify", [&](const YAML::Node& n, const std::string& k) {
    Section s(n, k, path);
    s.on("command", [&](const YAML::Node& v, const std::string& key) {
      if (!v.IsSequence() || v.size() == 0) s.fail(key, v, "must be a list: the program and its arguments (no shell)");
      for (const auto& item : v) c.notify.command.push_back(s.str(item, key));
      const std::string& prog = c.notify.command.front();
      if (prog.empty() || prog.front() == '-' || (prog.find('/') != std::string::npos && prog.front() != '/'))
        s.fail(key, v, "the program must be a name looked up in PATH or an absolute path");
    });
    s.on("command_timeout_seconds", [&](auto& v, auto& key) { c.notify.command_timeout_seconds = s.number(v, key, 1, 3600); });
    s.on("credits_low_below", [&](auto& v, auto& key) { c.notify.credits_low_below = s.number(v, key, 0, 1e12); });
    s.on("max_pending", [&](auto& v, auto& key) { c.notify.max_pending = static_cast<int>(s.integer(v, key, 1, 1000000)); });
    s.on("webhooks", [&](const YAML::Node& v, const std::string& key) {
      if (!v.IsSequence()) s.fail(key, v, "must be a list of {url, format, secret, events}");
      for (const auto& item : v) {
        WebhookConfig w;
        Section h(item, key + "[]", path);
        h.on("url", [&](auto& x, auto& kk) { w.url = h.str(x, kk); });
        h.on("format", [&](auto& x, auto& kk) {
          w.format = h.str(x, kk);
          if (w.format != "json" && w.format != "slack" && w.format != "discord")
            h.fail(kk, x, "must be json, slack or discord");
        });
        h.on("secret", [&](auto& x, auto& kk) { w.secret = h.str(x, kk); });
        h.on("events", [&](const YAML::Node& x, const std::string& kk) {
          if (!x.IsSequence() || x.size() == 0) h.fail(kk, x, "must be a list of batch_finished, shot_held, shot_stuck, credits_low");
          w.events.clear();
          for (const auto& e : x) {
            std::string name = h.str(e, kk);
            if (name != "batch_finished" && name != "shot_held" && name != "shot_stuck" && name != "credits_low")
              h.fail(kk, e, "unknown event '" + name + "' (batch_finished, shot_held, shot_stuck, credits_low)");
            w.events.push_back(name);
          }
        });
        h.run();
        if (w.url.empty()) h.fail(key + "[].url", item, "is required");
        c.notify.webhooks.push_back(std::move(w));
      }
    });
    s.run();
  });
  top.on("contact_sheet", [&](const YAML::Node& n, const std::string& k) {
    Section s(n, k, path);
    s.on("interval_seconds", [&](auto& v, auto& key) { c.contact_sheet.interval_seconds = s.number(v, key, 1, 3600); });
    s.run();
  });
  top.on("video", [&](const YAML::Node& n, const std::string& k) {
    Section s(n, k, path);
    auto program = [&](const YAML::Node& v, const std::string& key) {
      std::string p = s.str(v, key);
      if (p.empty() || p.front() == '-' || (p.find('/') != std::string::npos && p.front() != '/'))
        s.fail(key, v, "must be a program name looked up in PATH or an absolute path");
      return p;
    };
    s.on("ffprobe", [&](auto& v, auto& key) { c.video.ffprobe = program(v, key); });
    s.on("ffmpeg", [&](auto& v, auto& key) { c.video.ffmpeg = program(v, key); });
    s.on("timeout_seconds", [&](auto& v, auto& key) { c.video.timeout_seconds = s.number(v, key, 1, 600); });
    s.run();
  });
  top.on("log_level", [&](auto& v, auto& key) {
    c.log_level = top.str(v, key);
    if (c.log_level != "debug" && c.log_level != "info" && c.log_level != "warn" && c.log_level != "error")
      top.fail(key, v, "must be one of debug, info, warn, error");
  });
  top.run();
  for (const auto& w : c.notify.webhooks)
    if (!url_allowed(w.url, c.api.allow_loopback_http))
      // Not the URL itself: a Slack or Discord webhook URL is a credential, and
      // this message goes to the journal.
      throw Error(path + ": notify.webhooks[].url: must be an https URL (plain http only to 127.0.0.1 with "
                  "api.allow_loopback_http: true); the URL given (" + std::to_string(w.url.size()) +
                  " characters) is not shown, as it may carry a secret");

  auto require = [&](const std::string& value, const std::string& key) {
    if (value.empty()) throw Error(path + ": " + key + ": is required");
  };
  require(c.spool.incoming, "spool.incoming");
  require(c.spool.done, "spool.done");
  require(c.spool.failed, "spool.failed");
  require(c.state_dir, "state_dir");
  require(c.output_root, "output_root");
  if (c.input_roots.empty()) throw Error(path + ": input_roots: needs at least one folder");
  if (c.spool.active.empty()) c.spool.active = join_path(dirname_of(c.spool.incoming), "active");
  c.frames_dir = join_path(c.state_dir, "frames");
  return c;
}

Config load_config(const std::string& path) {
  std::string text;
  try {
    text = read_file(path, 1 << 20);
  } catch (const Error& e) {
    throw Error(std::string("cannot read the config: ") + e.what());
  }
  return parse_config(text, path);
}

std::string default_config_path() {
  const char* env = std::getenv("WANBATCH_CONFIG");
  return env && *env ? env : "/etc/wanbatch/wanbatch.yaml";
}

}  // namespace wb
