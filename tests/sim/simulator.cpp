#include "tests/sim/simulator.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "jobs/util.h"

namespace sim {

using nlohmann::json;

struct Simulator::Job {
  std::string id;
  uint64_t seq = 0;
  double submitted = 0, start = 0, end = 0;
  double first_completed = -1, last_download = -1;
  int duration = 5;
  std::string resolution = "720P";
  int status_requests = 0, result_requests = 0, download_requests = 0;
  bool fails = false;
  bool charged = false;
  double cost = 0;
  json params;
};

namespace {

double real_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Response json_response(int status, const json& body) {
  Response r;
  r.status = status;
  r.body = body.dump();
  return r;
}

Response error(int status, const std::string& message) { return json_response(status, {{"error", message}}); }

Response html_405() {
  Response r;
  r.status = 405;
  r.content_type = "text/html";
  r.body = "<!DOCTYPE html><html><head><title>405 Method Not Allowed</title></head>"
           "<body><h1>Method Not Allowed</h1></body></html>";
  return r;
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

std::string make_id(std::mt19937_64& rng) {
  char buf[40];
  uint64_t a = rng(), b = rng();
  std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-a%03x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>(a & 0xffff), static_cast<unsigned>((a >> 16) & 0xfff),
                static_cast<unsigned>(b & 0xfff), static_cast<unsigned long long>(b >> 16) & 0xffffffffffffull);
  return buf;
}

// FNV-1a: a hash that is the same in every build, so a seed names one set of render times.
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

double render_time(const Options& o, int duration, const std::string& resolution, uint64_t draw) {
  double mean = o.render_seconds;
  if (o.render_by_class) mean *= (duration / 5.0) * (resolution == "1080P" ? 2.25 : 1.0);
  if (o.render_sigma <= 0 && o.render_tail_share <= 0) return mean;
  std::mt19937_64 rng(draw);
  double t = mean;
  if (o.render_sigma > 0) {
    // mu = -sigma^2/2 keeps the factor's mean at 1, so the class mean holds.
    std::lognormal_distribution<double> factor(-o.render_sigma * o.render_sigma / 2, o.render_sigma);
    t *= factor(rng);
  }
  std::uniform_real_distribution<double> u(0, 1);
  if (o.render_tail_share > 0 && u(rng) < o.render_tail_share && o.render_tail_max > 1)
    t *= std::exp(u(rng) * std::log(o.render_tail_max));
  return t;
}

Simulator::Simulator(Options options)
    : opt_(std::move(options)),
      server_([this](const Request& r) { return handle(r); }),
      rng_(opt_.seed),
      worker_free_(static_cast<size_t>(std::max(1, opt_.workers)), 0.0) {
  start_real_ = real_now();
  stats_.credits = opt_.credits;
}

Simulator::~Simulator() { stop(); }

void Simulator::start(int port) { server_.start(port); }
void Simulator::stop() { server_.stop(); }

std::string Simulator::base_url() const { return "http://127.0.0.1:" + std::to_string(port()); }

double Simulator::now() const { return (real_now() - start_real_) / opt_.time_scale; }

Simulator::Stats Simulator::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  settle(now());
  return stats_;
}

std::vector<Simulator::JobView> Simulator::jobs() {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_view();
}

std::vector<Simulator::JobView> Simulator::jobs_view() const {
  std::vector<JobView> out(jobs_.size());
  for (const auto& [id, j] : jobs_) {
    JobView& v = out[j->seq];
    v.id = j->id;
    v.duration = j->duration;
    v.resolution = j->resolution;
    v.render = j->end - j->start;
    v.submitted = j->submitted;
    v.start = j->start;
    v.finish = j->end;
    v.first_completed = j->first_completed;
    v.last_download = j->last_download;
    v.fails = j->fails;
    v.status_requests = j->status_requests;
    v.result_requests = j->result_requests;
    v.download_requests = j->download_requests;
  }
  return out;
}

void Simulator::count(const Request& req) {
  const std::string& p = req.path;
  Endpoints& e = stats_.endpoints;
  if (starts_with(p, "/sim/")) return;
  if (p == "/v2/" + opt_.model && req.method == "POST") ++e.submit;
  else if (starts_with(p, "/v2/requests/") && p.size() > 7 && p.compare(p.size() - 7, 7, "/status") == 0) ++e.status;
  else if (starts_with(p, "/v2/requests/")) ++e.result;
  else if (p == "/upload-asset") ++e.upload;
  else if (starts_with(p, "/outputs/")) ++e.download;
  else if (p == "/v1/get-user-credits") ++e.credits;
  else ++e.other;
}

void Simulator::settle(double t) {
  for (auto& [id, j] : jobs_) {
    if (!j->charged && !j->fails && j->end <= t) {
      j->charged = true;
      stats_.credits -= j->cost;
    }
  }
}

std::string Simulator::job_state(const Job& j, double t) const {
  if (t < j.start) return "QUEUED";
  if (t < j.end) return "PROCESSING";
  return j.fails ? "FAILED" : "COMPLETED";
}

Response Simulator::handle(const Request& req) {
  std::lock_guard<std::mutex> lock(mu_);
  double t = now();
  settle(t);
  const std::string& p = req.path;
  if (p != "/sim/stats" && p != "/sim/jobs") ++stats_.requests;
  count(req);
  bool is_api = starts_with(p, "/v2/") || starts_with(p, "/v1/");
  if (starts_with(p, "/sim/")) {
    if (p == "/sim/stats")
      return json_response(200, {{"requests", stats_.requests},
                                 {"submits_accepted", stats_.submits_accepted},
                                 {"uploads", stats_.uploads},
                                 {"submits_dropped", stats_.submits_dropped},
                                 {"rate_limited", stats_.rate_limited},
                                 {"errors_injected", stats_.errors_injected},
                                 {"credits", stats_.credits},
                                 {"endpoints", {{"submit", stats_.endpoints.submit},
                                                {"status", stats_.endpoints.status},
                                                {"result", stats_.endpoints.result},
                                                {"upload", stats_.endpoints.upload},
                                                {"download", stats_.endpoints.download},
                                                {"credits", stats_.endpoints.credits},
                                                {"other", stats_.endpoints.other}}}});
    if (p == "/sim/jobs") {
      json list = json::array();
      for (const auto& v : jobs_view()) {
        auto opt = [](double x) { return x < 0 ? json(nullptr) : json(x); };
        list.push_back({{"id", v.id},
                        {"class", v.resolution + "/" + std::to_string(v.duration) + "s"},
                        {"duration", v.duration},
                        {"resolution", v.resolution},
                        {"render", v.render},
                        {"submitted", v.submitted},
                        {"start", v.start},
                        {"finish", v.finish},
                        {"first_completed", opt(v.first_completed)},
                        {"last_download", opt(v.last_download)},
                        {"fails", v.fails},
                        {"requests", {{"status", v.status_requests},
                                      {"result", v.result_requests},
                                      {"download", v.download_requests}}}});
      }
      return json_response(200, {{"now", t}, {"jobs", list}});
    }
    if (p == "/sim/credits" && req.method == "POST") {
      auto j = json::parse(req.body, nullptr, false);
      if (j.is_discarded() || !j.is_object()) return error(400, "body must be {\"add\": n} or {\"set\": n}");
      if (j.contains("add") && j["add"].is_number()) stats_.credits += j["add"].get<double>();
      if (j.contains("set") && j["set"].is_number()) stats_.credits = j["set"].get<double>();
      return json_response(200, {{"credits", stats_.credits}});
    }
    return error(404, "unknown simulator endpoint");
  }
  if (starts_with(p, "/outputs/")) {
    if (req.method != "GET" && req.method != "HEAD") return html_405();
    return output(req, p.substr(9));
  }
  if (starts_with(p, "/assets/")) {
    auto it = assets_.find(p.substr(8));
    if (it == assets_.end()) return error(404, "no such asset");
    Response r;
    r.content_type = "application/octet-stream";
    r.body = it->second;
    return r;
  }
  if (is_api || p == "/upload-asset") {
    std::string key = req.header("x-api-key");
    if (key.empty() || (!opt_.api_key.empty() && key != opt_.api_key))
      return error(401, key.empty() ? "Missing API key" : "Invalid API key");
  }
  if (p == "/upload-asset") {
    if (req.method != "POST") return html_405();
    return upload(req);
  }
  if (p == "/v1/get-user-credits") {
    if (req.method != "GET") return html_405();
    return json_response(200, {{"credits", stats_.credits}, {"is_trial", false}});
  }
  if (starts_with(p, "/v2/requests/")) {
    if (req.method != "GET") return html_405();
    if (opt_.error_rate > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < opt_.error_rate) {
      ++stats_.errors_injected;
      return error(500, "Internal server error");
    }
    std::string rest = p.substr(13);
    bool full = true;
    if (rest.size() > 7 && rest.compare(rest.size() - 7, 7, "/status") == 0) {
      rest.resize(rest.size() - 7);
      full = false;
    }
    return status(rest, full);
  }
  if (p == "/v2/" + opt_.model) {
    if (req.method != "POST") return html_405();
    return submit(req);
  }
  if (starts_with(p, "/v2/") || starts_with(p, "/v1/")) return error(404, "Model not found");
  return error(404, "Not found");
}

Response Simulator::submit(const Request& req) {
  double t = now();
  std::string ctype = req.header("content-type");
  if (ctype.find("application/json") == std::string::npos) {
    Response r;
    r.status = 406;
    r.content_type = "text/plain";
    r.body = "Invalid content type";
    return r;
  }
  if (opt_.rate_limit > 0) {
    if (t >= window_start_ + opt_.rate_window_seconds) {
      window_start_ = t - std::fmod(t - window_start_, opt_.rate_window_seconds);
      window_count_ = 0;
    }
    if (window_count_ >= opt_.rate_limit) {
      ++stats_.rate_limited;
      double reset_real = start_real_ + (window_start_ + opt_.rate_window_seconds) * opt_.time_scale;
      Response r = error(429, "Rate limit exceeded");
      r.headers.emplace_back("x-rate-limit-reset-at-utc",
                             wb::iso8601_utc(wb::from_epoch_ms(static_cast<int64_t>(reset_real * 1000))));
      return r;
    }
    ++window_count_;
  }
  if (opt_.error_rate > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < opt_.error_rate) {
    ++stats_.errors_injected;
    return error(500, "Internal server error");
  }
  auto body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) return error(400, "Request body must be a JSON object");
  if (!body.contains("prompt") || !body["prompt"].is_string() || body["prompt"].get<std::string>().empty())
    return error(400, "prompt is required");
  int duration = 5;
  if (body.contains("duration")) {
    if (!body["duration"].is_number_integer()) return error(400, "duration must be an integer");
    duration = body["duration"].get<int>();
    if (duration < 2 || duration > 15) return error(400, "duration must be between 2 and 15");
  }
  std::string resolution = body.value("resolution", "720P");
  if (resolution != "720P" && resolution != "1080P") return error(400, "resolution must be 720P or 1080P");
  for (const char* k : {"image", "last_frame", "audio_url"}) {
    if (!body.contains(k) || body[k].is_null()) continue;
    if (!body[k].is_string() || !(starts_with(body[k].get<std::string>(), "https://") ||
                                  starts_with(body[k].get<std::string>(), "http://127.0.0.1")))
      return error(400, std::string(k) + " must be a URL");
  }
  double cost = duration * (resolution == "1080P" ? opt_.price_per_second_1080p : opt_.price_per_second_720p);
  if (stats_.credits < cost) return error(406, "Insufficient credits");

  auto job = std::make_unique<Job>();
  job->id = make_id(rng_);
  job->seq = seq_++;
  job->submitted = t;
  auto worker = std::min_element(worker_free_.begin(), worker_free_.end());
  job->start = std::max(t, *worker);
  job->duration = duration;
  job->resolution = resolution;
  std::string prompt = body["prompt"].get<std::string>();
  uint64_t draw = opt_.seed ^ fnv1a(prompt + "\n" + std::to_string(duration) + "\n" + resolution);
  const bool slow = !opt_.render_slow_text.empty() && prompt.find(opt_.render_slow_text) != std::string::npos;
  job->end = job->start + (slow ? opt_.render_slow_seconds : render_time(opt_, duration, resolution, draw));
  *worker = job->end;
  job->fails = opt_.fail_rate > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < opt_.fail_rate;
  if (!opt_.fail_text.empty() && prompt.find(opt_.fail_text) != std::string::npos) job->fails = true;
  job->cost = cost;
  job->params = body;
  std::string id = job->id;
  ++stats_.submits_accepted;
  if (!opt_.ledger_path.empty()) {
    json line = {{"time", wb::iso8601_utc(std::chrono::system_clock::now())},
                 {"request_id", id},
                 {"model", opt_.model},
                 {"cost", cost},
                 {"params", body}};
    if (FILE* f = std::fopen(opt_.ledger_path.c_str(), "a")) {
      std::fputs((line.dump() + "\n").c_str(), f);
      std::fflush(f);
      ::fsync(fileno(f));
      std::fclose(f);
    }
  }
  jobs_[id] = std::move(job);
  if (opt_.drop_rate > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < opt_.drop_rate) {
    ++stats_.submits_dropped;
    Response r;
    r.drop = true;  // accepted and billed, but the client never hears of it
    return r;
  }
  std::string base = base_url();
  Response r = json_response(200, {{"request_id", id},
                                   {"status", "QUEUED"},
                                   {"status_url", base + "/v2/requests/" + id + "/status"},
                                   {"response_url", base + "/v2/requests/" + id}});
  r.headers.emplace_back("x-request-id", id);
  r.headers.emplace_back("x-remaining-credits", std::to_string(stats_.credits));
  return r;
}

Response Simulator::status(const std::string& id, bool full) {
  double t = now();
  auto it = jobs_.find(id);
  if (it == jobs_.end() || t > it->second->end + opt_.expiry_seconds)
    return error(404, "Request " + id + " not found");
  Job& j = *it->second;
  ++(full ? j.result_requests : j.status_requests);
  std::string state = job_state(j, t);
  if (state == "COMPLETED" && j.first_completed < 0) j.first_completed = t;
  // In the seconds the client lives in (simulated seconds times the time scale),
  // as a real provider's timings match the client's clock.
  const double k = opt_.time_scale;
  json timing = {{"queue_time", k * std::max(0.0, std::min(t, j.start) - j.submitted)},
                 {"inference_time", k * std::max(0.0, std::min(t, j.end) - j.start)},
                 {"total_time", k * (std::min(t, j.end) - j.submitted)}};
  if (state == "FAILED")
    return json_response(422, {{"status", "FAILED"},
                               {"error", "Content blocked by the safety filter (simulated failure)"},
                               {"metrics", timing}});
  if (!full || state != "COMPLETED") return json_response(200, {{"status", state}});
  std::string url = base_url() + "/outputs/" + j.id + ".mp4";
  std::string shape = opt_.output_shape;
  if (shape == "mixed") shape = j.seq % 3 == 0 ? "string" : j.seq % 3 == 1 ? "video" : "video_url";
  json output = shape == "video" ? json{{"video", {{"url", url}}}}
                : shape == "video_url" ? json{{"video_url", url}}
                                       : json(url);
  json metrics = timing;
  metrics["cost"] = j.cost;
  metrics["remaining_credits"] = stats_.credits;
  return json_response(200, {{"status", "COMPLETED"}, {"output", output}, {"metrics", metrics}});
}

Response Simulator::upload(const Request& req) {
  auto body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.contains("data_urls") || !body["data_urls"].is_array() ||
      body["data_urls"].empty())
    return error(400, "data_urls must be a non-empty list");
  json urls = json::array();
  for (const auto& d : body["data_urls"]) {
    if (!d.is_string() || !starts_with(d.get<std::string>(), "data:")) return error(400, "not a data URL");
    std::string data = d.get<std::string>();
    auto comma = data.find(',');
    if (comma == std::string::npos || data.find(";base64") > comma) return error(400, "data URL must be base64");
    std::string name = wb::sha256_hex(data).substr(0, 32);
    std::string mime = data.substr(5, data.find(';') - 5);
    name += mime == "image/png" ? ".png" : mime == "image/jpeg" ? ".jpg" : ".bin";
    assets_[name] = data.substr(comma + 1);  // kept encoded; enough for a rehearsal
    ++stats_.uploads;
    urls.push_back(base_url() + "/assets/" + name);
  }
  return json_response(200, {{"file_urls", urls}, {"message", "Files uploaded successfully"}});
}

Response Simulator::output(const Request& req, const std::string& name) {
  std::string id = name.size() > 4 ? name.substr(0, name.size() - 4) : name;
  auto it = jobs_.find(id);
  if (it != jobs_.end()) ++it->second->download_requests;
  if (it == jobs_.end() || job_state(*it->second, now()) != "COMPLETED") return error(404, "No such output");
  it->second->last_download = now();
  if (opt_.output_error_bytes > 0) {
    Response huge;
    huge.status = 500;
    huge.content_type = "text/plain";
    huge.body.assign(static_cast<size_t>(opt_.output_error_bytes), 'x');
    return huge;
  }
  std::string_view data = sample_mp4();
  Response r;
  r.trickle_bytes_per_second = opt_.trickle_bytes_per_second;
  r.content_type = "video/mp4";
  r.headers.emplace_back("Accept-Ranges", "bytes");
  std::string range = req.header("range");
  if (starts_with(range, "bytes=")) {
    size_t dash = range.find('-');
    size_t from = std::stoull(range.substr(6, dash - 6));
    size_t to = dash + 1 < range.size() ? std::stoull(range.substr(dash + 1)) : data.size() - 1;
    if (from >= data.size() || to < from) {
      r.status = 416;
      r.headers.emplace_back("Content-Range", "bytes */" + std::to_string(data.size()));
      return r;
    }
    to = std::min(to, data.size() - 1);
    r.status = 206;
    r.headers.emplace_back("Content-Range", "bytes " + std::to_string(from) + "-" + std::to_string(to) + "/" +
                                                std::to_string(data.size()));
    r.body = std::string(data.substr(from, to - from + 1));
    return r;
  }
  r.body = std::string(data);
  return r;
}

}  // namespace sim
