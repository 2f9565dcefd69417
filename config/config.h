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
struct Config : Settings {
  std::string path;  // the file it came from, for messages
  SpoolConfig spool;
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
