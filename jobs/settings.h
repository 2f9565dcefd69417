// What the engine (jobs/) is told: the API, limits, polling, retries, prices,
// the submit window. Plain values with their defaults; config/ reads them from
// the YAML file (config/config.h), tests set them directly. jobs/ never
// includes config/: this header is the whole of what it knows of the config.
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
  double submit_window_seconds = 60;  // the provider's rate window (SubmitBucket)
  double credit_reserve = 0;        // credits never spent
  double daily_budget_credits = 0;  // per local day; 0: no daily budget
  // Every API call (submits, polls, results, credit reads, uploads) per minute; 0: no budget.
  double requests_per_minute = 0;
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

// When each job is polled is learned (jobs/engine/poll_policy.h); these bound it.
struct PollConfig {
  double min_interval_seconds = 2;
  double max_interval_seconds = 300;
  // The mean delay between a job completing and the daemon noticing, as a
  // share of its expected render time.
  double target_delay_fraction = 0.03;
  // Before any render is observed: a 5 s 720P render takes about this long
  // (the product page's figure), scaled by duration and resolution.
  double prior_render_seconds = 138;
  // A job in flight longer than this is marked stuck (jobs/engine/stuck.h);
  // 0: learned, twice the 99th percentile of its class's render time.
  double stuck_after_seconds = 0;
};

struct RetryConfig {
  int max_attempts = 5;
  double base_delay_seconds = 1;
  double max_delay_seconds = 60;
};

// The helpers that check each downloaded video (ffprobe) and take its poster
// frame (ffmpeg): run without a shell, each killed after timeout_seconds.
struct VideoConfig {
  std::string ffprobe = "ffprobe";
  std::string ffmpeg = "ffmpeg";
  double timeout_seconds = 30;
};

// Everything the engine reads. Config (config/config.h) adds what only the
// daemon needs: the spool, the state directory, the log level.
struct Settings {
  ApiConfig api;
  std::string output_root;
  std::vector<std::string> input_roots;
  // Frames taken from finished videos for the shots that open with them (shot
  // chains): state_dir/frames, set by the config loader.
  std::string frames_dir;
  LimitsConfig limits;
  PollConfig poll;
  RetryConfig retry;
  PricingConfig pricing;
  CreditsConfig credits;
  VideoConfig video;
  std::string window;  // schedule.window: "22:00-07:00" local, "" = always
  OnExpired on_expired = OnExpired::hold;
};

}  // namespace wb
