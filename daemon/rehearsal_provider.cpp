#include "daemon/rehearsal_provider.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "jobs/credits.h"
#include "jobs/json_safe.h"

namespace wb {

namespace {

using nlohmann::json;

HttpResponse json_answer(long status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.body = body.dump();
  r.headers["content-type"] = "application/json";
  return r;
}

// The path of a URL: what follows the host ("" when there is none).
std::string path_of(const std::string& url) {
  auto scheme = url.find("://");
  auto slash = url.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  if (slash == std::string::npos) return "";
  auto query = url.find('?', slash);
  return url.substr(slash, query == std::string::npos ? std::string::npos : query - slash);
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

RehearsalProvider::RehearsalProvider(const RenderModel& model, const CostModel& costs, std::optional<double> balance,
                                     ClockMs now_ms, uint64_t seed)
    : model_(model), costs_(costs), balance_(balance), now_ms_(std::move(now_ms)), rng_(seed) {}

void RehearsalProvider::start(HttpRequest request, HttpCallback done) {
  calls_.emplace_back(std::move(request), std::move(done));
}

size_t RehearsalProvider::answer_all() {
  size_t n = 0;
  while (!calls_.empty()) {
    auto [request, done] = std::move(calls_.front());
    calls_.pop_front();
    done(answer(request));
    ++n;
  }
  return n;
}

double RehearsalProvider::balance_left() const { return balance_ ? *balance_ - charged_ : 1e12; }

HttpResponse RehearsalProvider::answer(const HttpRequest& request) {
  const std::string path = path_of(request.url);
  if (request.sink_fd >= 0) {  // a download: the sample video
    std::string_view mp4 = rehearsal::sample_mp4();
    // A 200 (not 206) restarts the file, as the real transport does.
    if (::ftruncate(request.sink_fd, 0) != 0 || ::lseek(request.sink_fd, 0, SEEK_SET) != 0) {
      HttpResponse r;
      r.error = NetError::local_write;
      r.error_text = "rehearsal: cannot write the sample video";
      return r;
    }
    const char* p = mp4.data();
    size_t left = mp4.size();
    while (left > 0) {
      ssize_t w = ::write(request.sink_fd, p, left);
      if (w <= 0) {
        HttpResponse r;
        r.error = NetError::local_write;
        r.error_text = "rehearsal: cannot write the sample video";
        return r;
      }
      p += w;
      left -= static_cast<size_t>(w);
    }
    HttpResponse r;
    r.status = 200;
    r.body_bytes = static_cast<long long>(mp4.size());
    return r;
  }
  if (ends_with(path, "/upload-asset") || path == "/upload-asset")
    return json_answer(200, {{"file_urls", {"https://rehearsal.invalid/assets/" + std::to_string(++uploads_)}},
                             {"message", "Files uploaded successfully"}});
  if (path == "/v1/get-user-credits") return json_answer(200, {{"credits", balance_left()}, {"is_trial", false}});
  const std::string requests = "/v2/requests/";
  if (path.rfind(requests, 0) == 0) {
    std::string id = path.substr(requests.size());
    bool full = true;
    if (ends_with(id, "/status")) {
      id.resize(id.size() - 7);
      full = false;
    }
    return job_answer(id, full);
  }
  if (request.method == "POST" && path.rfind("/v2/", 0) == 0) return submit(request);
  return json_answer(404, {{"error", "the rehearsal's provider does not know " + path}});
}

HttpResponse RehearsalProvider::submit(const HttpRequest& request) {
  auto body = parse_json_bounded(request.body);
  ShotSpec spec;
  if (body && body->is_object()) {
    if (auto d = body->find("duration"); d != body->end() && d->is_number_integer()) spec.duration = d->get<int>();
    if (auto r = body->find("resolution"); r != body->end() && r->is_string()) spec.resolution = r->get<std::string>();
  }
  Job job;
  job.cost = from_micro(costs_.estimate(spec));
  if (balance_left() < job.cost) return json_answer(406, {{"error", "Insufficient credits"}});
  RenderDist dist = model_.dist(RenderClass{spec.resolution, spec.duration});
  double u = std::uniform_real_distribution<double>(0.001, 0.999)(rng_);
  job.render_s = dist.empty() ? RenderModel::prior_median(RenderClass{spec.resolution, spec.duration}) : dist.quantile(u);
  job.finish_ms = now_ms_() + static_cast<int64_t>(job.render_s * 1000);
  std::string id = "rehearsal-" + std::to_string(jobs_.size() + 1);
  jobs_[id] = job;
  return json_answer(200, {{"request_id", id},
                           {"status", "QUEUED"},
                           {"status_url", "https://rehearsal.invalid/v2/requests/" + id + "/status"}});
}

HttpResponse RehearsalProvider::job_answer(const std::string& id, bool full) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return json_answer(404, {{"error", "Request not found"}});
  Job& job = it->second;
  if (now_ms_() < job.finish_ms) return json_answer(200, {{"status", "PROCESSING"}});
  if (!job.charged) {  // charged when it completes, as the provider does
    job.charged = true;
    charged_ += job.cost;
  }
  if (!full) return json_answer(200, {{"status", "COMPLETED"}});
  json metrics = {{"inference_time", job.render_s},
                  {"queue_time", 0.0},
                  {"total_time", job.render_s},
                  {"cost", job.cost},
                  {"remaining_credits", balance_left()}};
  return json_answer(200, {{"status", "COMPLETED"},
                           {"output", "https://rehearsal.invalid/outputs/" + id + ".mp4"},
                           {"metrics", metrics}});
}

}  // namespace wb
