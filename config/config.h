// The daemon's settings: one struct with defaults, loaded from YAML and validated
// as a whole. Every key is documented in docs/CONFIG.md; an unknown key is an
// error so that a typo never silently falls back to a default.
#pragma once

#include <string>
#include <vector>

namespace wb {

struct ApiConfig {
  std::string base_url = "https://api.segmind.com";
  std::string storage_url = "https://workflows-api.segmind.com/upload-asset";
  std::string model = "wan2.7-i2v";
  std::string key_env = "SEGMIND_API_KEY";
  std::string key_file;
  bool allow_loopback_http = false;
  double request_timeout_seconds = 60;
  double connect_timeout_seconds = 15;
};

struct SpoolConfig {
  std::string incoming;
  std::string active;  // default: sibling "active" of incoming
  std::string done;
  std::string failed;
  double settle_seconds = 2;
};

struct LimitsConfig {
  int max_in_flight = 8;
  int max_shots_per_manifest = 1000;
  long long max_manifest_bytes = 1 << 20;
  long long max_media_bytes = 50ll << 20;
  long long max_download_bytes = 2ll << 30;
  int max_concurrent_uploads = 4;
  int max_concurrent_downloads = 4;
  // A download under this speed for download_stall_seconds is cut short and
  // retried (Range resume); the same speed scales each download's deadline.
  long long download_min_bytes_per_second = 16384;
  int download_stall_seconds = 30;
  double submits_per_minute = 20;
  double credit_reserve = 0;        // credits never spent
  double daily_budget_credits = 0;  // per local day; 0: no daily budget
};

// Credits per second of video, by resolution: the estimate before any cost is
// observed. Observed metrics.cost refines it per resolution.
struct PricingConfig {
  double credits_per_second_720p = 0.1;
  double credits_per_second_1080p = 0.15;
};

struct CreditsConfig {
  double check_interval_seconds = 300;  // balance refresh from /v1/get-user-credits
};

enum class OnExpired { hold, resubmit };

struct PollConfig {
  double min_interval_seconds = 2;
  double max_interval_seconds = 15;
};

struct RetryConfig {
  int max_attempts = 5;
  double base_delay_seconds = 1;
  double max_delay_seconds = 60;
};

struct Config {
  std::string path;  // the file it came from, for messages
  ApiConfig api;
  SpoolConfig spool;
  std::string state_dir;
  std::string output_root;
  std::vector<std::string> input_roots;
  LimitsConfig limits;
  PollConfig poll;
  RetryConfig retry;
  PricingConfig pricing;
  CreditsConfig credits;
  std::string window;  // schedule.window: "22:00-07:00" local, "" = always
  OnExpired on_expired = OnExpired::hold;
  std::string log_level = "info";
};

// Loads and validates a config file. Throws wb::Error naming the file and the key.
Config load_config(const std::string& path);

// Same, from text (for tests); `path` only names the source in messages.
Config parse_config(const std::string& text, const std::string& path);

// Where the daemon looks when --config is not given.
std::string default_config_path();

}  // namespace wb
