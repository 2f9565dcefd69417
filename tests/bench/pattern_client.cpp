// segmind-pattern: the provider's documented polling pattern as a client, the
// yardstick of scripts/bench-polling.sh. Keeps up to --in-flight jobs submitted
// at once (one thread each); each submits, polls the status URL every
// --interval seconds at a fixed pace (the SDK's wait(): first poll at once, no
// backoff, no jitter, no retry), fetches the result once COMPLETED, downloads
// the output, and takes the next shot. Prints its figures as one JSON object,
// with its own CPU time and peak RSS.
// The API key comes from SEGMIND_API_KEY, never from argv.
#include <curl/curl.h>
#include <sys/resource.h>
#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

using nlohmann::json;

namespace {

struct Shot {
  std::string prompt;
  std::string image;
  int duration = 5;
  std::string resolution = "720P";
};

// The shots of a wanbatch manifest: `defaults` and `shots` with prompt, image,
// duration, resolution (other fields are not needed to submit). Images must be URLs.
std::vector<Shot> load_shots(const std::string& path) {
  YAML::Node doc = YAML::LoadFile(path);
  Shot defaults;
  if (auto d = doc["defaults"]) {
    if (d["duration"]) defaults.duration = d["duration"].as<int>();
    if (d["resolution"]) defaults.resolution = d["resolution"].as<std::string>();
    if (d["image"]) defaults.image = d["image"].as<std::string>();
  }
  std::vector<Shot> shots;
  for (const auto& n : doc["shots"]) {
    Shot s = defaults;
    s.prompt = n["prompt"].as<std::string>();
    if (n["image"]) s.image = n["image"].as<std::string>();
    if (n["duration"]) s.duration = n["duration"].as<int>();
    if (n["resolution"]) s.resolution = n["resolution"].as<std::string>();
    if (s.image.rfind("http", 0) != 0) throw std::runtime_error(path + ": image '" + s.image + "' is not a URL");
    shots.push_back(s);
  }
  return shots;
}

size_t collect(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

struct Answer {
  long code = 0;  // 0: no answer (transport error)
  std::string body;
};

class Http {
 public:
  explicit Http(std::string key) : key_(std::move(key)), curl_(curl_easy_init()) {}
  ~Http() { curl_easy_cleanup(curl_); }
  Http(const Http&) = delete;
  Http& operator=(const Http&) = delete;

  Answer call(const std::string& url, const std::string* post_body, double timeout) {
    Answer a;
    curl_easy_reset(curl_);
    curl_slist* headers = curl_slist_append(nullptr, ("x-api-key: " + key_).c_str());
    if (post_body) {
      headers = curl_slist_append(headers, "Content-Type: application/json");
      curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, post_body->c_str());
    }
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &a.body);
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout * 1000));
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
    if (curl_easy_perform(curl_) == CURLE_OK) curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &a.code);
    curl_slist_free_all(headers);
    return a;
  }

 private:
  std::string key_;
  CURL* curl_;
};

std::string output_url(const json& out) {
  if (out.is_string()) return out.get<std::string>();
  if (out.is_object() && out.contains("video") && out["video"].is_object() && out["video"].contains("url"))
    return out["video"]["url"].get<std::string>();
  if (out.is_object() && out.contains("video_url")) return out["video_url"].get<std::string>();
  return "";
}

struct Tally {
  std::atomic<int> submits{0}, polls{0}, results{0}, downloads{0};
  std::atomic<int> done{0}, failed{0}, errors{0};
};

// One shot from submit to downloaded output (or FAILED, or given up after `give_up` seconds).
void run_shot(Http& http, const std::string& base, const std::string& model, const Shot& shot, double interval,
              double timeout, double give_up, Tally& t) {
  json body = {{"prompt", shot.prompt}, {"image", shot.image}, {"duration", shot.duration},
               {"resolution", shot.resolution}};
  std::string text = body.dump();
  ++t.submits;
  Answer sub = http.call(base + "/v2/" + model, &text, timeout);
  json s = json::parse(sub.body, nullptr, false);
  if (sub.code != 200 || !s.is_object() || !s.contains("status_url")) {
    ++t.errors;
    return;
  }
  std::string status_url = s["status_url"], response_url = s["response_url"];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(give_up);
  while (std::chrono::steady_clock::now() < deadline) {
    ++t.polls;
    Answer st = http.call(status_url, nullptr, timeout);
    json j = json::parse(st.body, nullptr, false);
    std::string state = j.is_object() && j.contains("status") && j["status"].is_string() ? j["status"] : "";
    if (state == "FAILED") {
      ++t.failed;
      return;
    }
    if (state == "COMPLETED") {
      ++t.results;
      Answer res = http.call(response_url, nullptr, timeout);
      json r = json::parse(res.body, nullptr, false);
      std::string url = res.code == 200 && r.is_object() && r.contains("output") ? output_url(r["output"]) : "";
      if (url.empty()) {
        ++t.errors;
        return;
      }
      ++t.downloads;
      Answer video = http.call(url, nullptr, timeout);
      if (video.code == 200 && !video.body.empty()) ++t.done;
      else ++t.errors;
      return;
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(interval));
  }
  ++t.errors;
}

}  // namespace

int main(int argc, char** argv) {
  std::string base, manifest, model = "wan2.7-i2v", image = "https://cdn.example/frame.png", resolution = "720P";
  int shots_n = 0, duration = 5, in_flight = 8;
  double interval = 2, timeout = 60, give_up = 3600;
  CLI::App app{"segmind-pattern: the provider's documented polling pattern (submit, poll the status URL\n"
               "every --interval s, fetch the result, download), up to --in-flight jobs at once.\n"
               "Prints JSON figures. The API key comes from SEGMIND_API_KEY."};
  app.add_option("--base-url", base, "API base URL, e.g. http://127.0.0.1:PORT")->required();
  app.add_option("--manifest", manifest, "a wanbatch manifest whose shots to render (images must be URLs)");
  app.add_option("--shots", shots_n, "without --manifest: this many shots of --duration and --resolution");
  app.add_option("--duration", duration, "seconds of video per shot")->capture_default_str();
  app.add_option("--resolution", resolution, "720P or 1080P")->capture_default_str();
  app.add_option("--image", image, "first-frame URL for --shots")->capture_default_str();
  app.add_option("--model", model, "model slug")->capture_default_str();
  app.add_option("--in-flight", in_flight, "jobs submitted at once (wanbatch's limits.max_in_flight)")
      ->capture_default_str()->check(CLI::Range(1, 200));
  app.add_option("--interval", interval, "seconds between status polls")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--timeout", timeout, "seconds per request")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--give-up", give_up, "seconds after the submit when a job is abandoned")
      ->capture_default_str()->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  const char* key = std::getenv("SEGMIND_API_KEY");
  if (!key || !*key) {
    std::cerr << "segmind-pattern: set SEGMIND_API_KEY\n";
    return 2;
  }
  std::vector<Shot> shots;
  try {
    if (!manifest.empty()) shots = load_shots(manifest);
    else
      for (int i = 0; i < shots_n; ++i) shots.push_back({"shot " + std::to_string(i + 1), image, duration, resolution});
  } catch (const std::exception& e) {
    std::cerr << "segmind-pattern: " << e.what() << "\n";
    return 2;
  }
  if (shots.empty()) {
    std::cerr << "segmind-pattern: no shots (give --manifest or --shots)\n";
    return 2;
  }

  curl_global_init(CURL_GLOBAL_DEFAULT);
  Tally t;
  std::atomic<size_t> next{0};
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int w = 0; w < std::min<int>(in_flight, static_cast<int>(shots.size())); ++w)
    workers.emplace_back([&] {
      Http http(key);
      for (size_t i; (i = next++) < shots.size();) run_shot(http, base, model, shots[i], interval, timeout, give_up, t);
    });
  for (auto& w : workers) w.join();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  curl_global_cleanup();
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;

  json out = {{"shots", shots.size()}, {"done", t.done.load()}, {"failed", t.failed.load()},
              {"errors", t.errors.load()}, {"wall_seconds", wall},
              {"cpu_seconds", cpu}, {"peak_rss_kib", ru.ru_maxrss},
              {"requests", {{"submit", t.submits.load()}, {"status", t.polls.load()},
                            {"result", t.results.load()}, {"download", t.downloads.load()}}}};
  std::cout << out.dump() << "\n";
  return t.done + t.failed == static_cast<int>(shots.size()) ? 0 : 1;
}
