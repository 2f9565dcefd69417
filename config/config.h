// The daemon's settings: one struct with defaults, loaded from YAML and validated
// as a whole. Every key is documented in docs/CONFIG.md; an unknown key is an
// error so that a typo never silently falls back to a default.
#pragma once

#include <string>
#include <vector>

#include "jobs/settings.h"

namespace wb {

struct SpoolConfig {
  std::string incoming;
  std::string active;  // default: sibling "active" of incoming
  std::string done;
  std::string failed;
  double settle_seconds = 2;
};

// The daemon's whole configuration: the engine's settings and its own.
// The contact sheets (daemon/contact_sheets.h): while a batch runs, its
// index.html is written again at most every interval_seconds.
struct ContactSheetConfig {
  double interval_seconds = 10;
};

// notify: who hears of a batch's end (daemon/notifier.h).
struct WebhookConfig {
  std::string url;
  std::string format = "json";  // json | slack | discord
  std::string secret;           // signs the body (X-Wanbatch-Signature) when set
  std::vector<std::string> events = {"batch_finished"};  // batch_finished, shot_held, credits_low
  bool operator==(const WebhookConfig&) const = default;
};
struct NotifyConfig {
  std::vector<std::string> command;  // argv, no shell; run at each batch end
  double command_timeout_seconds = 60;
  std::vector<WebhookConfig> webhooks;
  double credits_low_below = 0;  // credits_low fires when a balance read falls under it; 0: never
  int max_pending = 1000;        // webhook deliveries kept at most; past it the oldest is dropped
  bool operator==(const NotifyConfig&) const = default;
};

struct Config : Settings {
  std::string path;  // the file it came from, for messages
  SpoolConfig spool;
  ContactSheetConfig contact_sheet;
  NotifyConfig notify;
  std::string state_dir;
  std::string log_level = "info";
  // metrics.listen: HOST:PORT of the Prometheus endpoint (/metrics); "" turns it off.
  std::string metrics_listen = "127.0.0.1:9464";
};
// Loads and validates a config file. Throws wb::Error naming the file and the key.
Config load_config(const std::string& path);

// Same, from text (for tests); `path` only names the source in messages.
Config parse_config(const std::string& text, const std::string& path);

// Where the daemon looks when --config is not given.
std::string default_config_path();

}  // namespace wb
