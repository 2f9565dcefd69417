#include "jobs/segmind.h"

#include <cmath>
#include <optional>
#include <nlohmann/json.hpp>

#include "jobs/json_safe.h"

namespace wb {

namespace {

using nlohmann::json;

// Every answer is parsed with a bound on its nesting (jobs/json_safe.h): a
// deeper one is malformed.
std::optional<json> parse_json(const std::string& body) { return parse_json_bounded(body); }

// At most `n` bytes, with control characters (CR, LF, ...) shown as '?', so an
// answer cannot forge log lines or HELD reasons.
std::string clip(std::string s, size_t n = 300) {
  if (s.size() > n) s = s.substr(0, n) + "...";
  for (auto& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return s;
}

// Percent-encodes everything but RFC 3986 unreserved characters: a path
// segment built from it cannot add a segment, a query or a fragment.
std::string path_segment(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (out == "." || out == "..") out = out == "." ? "%2E" : "%2E%2E";
  return out;
}

bool contains_ci(const std::string& hay, const std::string& needle) {
  auto lower = [](std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  return lower(hay).find(lower(needle)) != std::string::npos;
}

// The verdict for an HTTP error status that every call shares.
Verdict common_error(const HttpResponse& r, const std::string& message) {
  switch (r.status) {
    case 400:
    case 410:
      return Verdict::rejected;
    case 401:
    case 403:
      return Verdict::auth;
    case 404:
      return Verdict::not_found;
    case 406:
      if (contains_ci(message, "credit") || contains_ci(message, "spend") || contains_ci(message, "limit"))
        return Verdict::credits;
      return Verdict::bug;
    case 422:
      return Verdict::failed;
    case 429:
      return Verdict::rate_limited;
    default:
      if (r.status >= 500) return Verdict::retry;
      return Verdict::bug;
  }
}

std::optional<TimePoint> reset_header(const HttpResponse& r) {
  return parse_reset_time(r.header("x-rate-limit-reset-at-utc"));
}

std::string output_url_of(const json& out) {
  if (out.is_string()) return out.get<std::string>();
  if (out.is_array() && !out.empty()) return output_url_of(out.front());
  if (!out.is_object()) return "";
  for (const char* key : {"video_url", "url", "video", "output"}) {
    if (!out.contains(key)) continue;
    std::string u = output_url_of(out[key]);
    if (!u.empty()) return u;
  }
  return "";
}

}  // namespace

const char* to_string(Verdict v) {
  switch (v) {
    case Verdict::ok: return "ok";
    case Verdict::retry: return "retry";
    case Verdict::rate_limited: return "rate_limited";
    case Verdict::ambiguous: return "ambiguous";
    case Verdict::rejected: return "rejected";
    case Verdict::auth: return "auth";
    case Verdict::credits: return "credits";
    case Verdict::bug: return "bug";
    case Verdict::failed: return "failed";
    case Verdict::not_found: return "not_found";
  }
  return "?";
}

std::string submit_url(const ApiConfig& api) { return api.base_url + "/v2/" + api.model; }
std::string status_url(const ApiConfig& api, const std::string& id) {
  return api.base_url + "/v2/requests/" + path_segment(id) + "/status";
}
std::string result_url(const ApiConfig& api, const std::string& id) {
  return api.base_url + "/v2/requests/" + path_segment(id);
}

bool is_plain_token(std::string_view id) {
  if (id.empty() || id.size() > 128 || !std::isalnum(static_cast<unsigned char>(id[0]))) return false;
  for (unsigned char c : id)
    if (!std::isalnum(c) && c != '-' && c != '_' && c != '.') return false;
  return true;
}
std::string credits_url(const ApiConfig& api) { return api.base_url + "/v1/get-user-credits"; }

std::string submit_body(const Shot& s) {
  json j = {{"prompt", s.spec.prompt}, {"duration", s.spec.duration}, {"resolution", s.spec.resolution}};
  auto media = [](const MediaRef& ref, const std::string& uploaded) {
    return ref.url.empty() ? uploaded : ref.url;
  };
  j["image"] = media(s.spec.image, s.image_url);
  if (!s.spec.last_frame.empty()) j["last_frame"] = media(s.spec.last_frame, s.last_frame_url);
  if (!s.spec.audio.empty()) j["audio_url"] = media(s.spec.audio, s.audio_url);
  if (!s.spec.negative_prompt.empty()) j["negative_prompt"] = s.spec.negative_prompt;
  if (s.spec.seed) j["seed"] = *s.spec.seed;
  return j.dump();
}

std::string upload_body(const std::string& mime, const std::string& data) {
  return json{{"data_urls", json::array({"data:" + mime + ";base64," + base64_encode(data)})}}.dump();
}

std::optional<double> parse_credits(const HttpResponse& r) {
  if (r.error != NetError::none || r.status != 200) return std::nullopt;
  auto j = parse_json(r.body);
  if (!j || !j->is_object() || !j->contains("credits") || !(*j)["credits"].is_number()) return std::nullopt;
  return (*j)["credits"].get<double>();
}

std::string error_message(const HttpResponse& r) {
  if (r.error != NetError::none)
    return std::string(to_string(r.error)) + (r.error_text.empty() ? "" : ": " + r.error_text);
  if (auto j = parse_json(r.body); j && j->is_object()) {
    for (const char* key : {"error", "message", "detail"})
      if (j->contains(key)) {
        const auto& v = (*j)[key];
        return "HTTP " + std::to_string(r.status) + ": " + clip(v.is_string() ? v.get<std::string>() : v.dump());
      }
  }
  if (r.body.find("<html") != std::string::npos || r.body.find("<!DOCTYPE") != std::string::npos ||
      r.body.find("<!doctype") != std::string::npos)
    return "HTTP " + std::to_string(r.status) + " (an HTML page)";
  std::string text = r.body;
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  return "HTTP " + std::to_string(r.status) + (text.empty() ? "" : ": " + clip(text));
}

SubmitAnswer classify_submit(const HttpResponse& r) {
  SubmitAnswer a;
  if (r.error == NetError::not_sent || r.error == NetError::refused_url) {
    a.verdict = r.error == NetError::not_sent ? Verdict::retry : Verdict::bug;
    a.message = error_message(r);
    return a;
  }
  if (r.error != NetError::none) {
    a.verdict = Verdict::ambiguous;
    a.message = "submit sent but no complete answer (" + error_message(r) + ")";
    return a;
  }
  if (r.status >= 200 && r.status < 300) {
    auto j = parse_json(r.body);
    if (j && j->is_object() && j->contains("request_id") && (*j)["request_id"].is_string() &&
        !(*j)["request_id"].get<std::string>().empty()) {
      std::string id = (*j)["request_id"].get<std::string>();
      if (!is_plain_token(id)) {
        // Never used in a URL: a job may exist and be billed, and a person decides.
        a.verdict = Verdict::ambiguous;
        a.message = "submit answered a request_id that is not a plain token (" + clip((*j)["request_id"].dump(), 160) +
                    "); it is not followed";
        return a;
      }
      a.verdict = Verdict::ok;
      a.request_id = std::move(id);
      return a;
    }
    // Accepted, but we cannot follow the job: it may be billed. A person decides.
    a.verdict = Verdict::ambiguous;
    a.message = "submit answered HTTP " + std::to_string(r.status) + " without a request_id: " + clip(r.body);
    return a;
  }
  a.message = error_message(r);
  a.verdict = common_error(r, a.message);
  if (a.verdict == Verdict::not_found) a.verdict = Verdict::rejected;  // unknown model
  if (a.verdict == Verdict::failed) a.verdict = Verdict::rejected;
  if (a.verdict == Verdict::rate_limited) a.reset_at = reset_header(r);
  return a;
}

StatusAnswer classify_status(const HttpResponse& r) {
  StatusAnswer a;
  if (r.error != NetError::none) {
    a.verdict = r.error == NetError::refused_url ? Verdict::bug : Verdict::retry;
    a.message = error_message(r);
    return a;
  }
  auto j = parse_json(r.body);
  std::string status = j && j->is_object() && j->contains("status") && (*j)["status"].is_string()
                           ? (*j)["status"].get<std::string>()
                           : "";
  if (r.status == 200 || r.status == 422) {
    if (status == "QUEUED" || status == "PROCESSING" || status == "COMPLETED") {
      a.verdict = Verdict::ok;
      a.status = status;
      return a;
    }
    if (status == "FAILED") {
      a.verdict = Verdict::failed;
      a.status = status;
      a.message = j->contains("error") ? clip((*j)["error"].is_string() ? (*j)["error"].get<std::string>()
                                                                         : (*j)["error"].dump())
                                       : "the provider reported FAILED without a message";
      return a;
    }
    if (r.status == 200) {
      // Malformed, `{}`, or a status we do not know: retried up to
      // retry.max_attempts, then HELD (docs/ERRORS.md), never followed forever.
      a.verdict = Verdict::bug;
      a.message = "unexpected status answer: " + clip(r.body);
      return a;
    }
  }
  a.message = error_message(r);
  a.verdict = common_error(r, a.message);
  if (a.verdict == Verdict::rate_limited) a.reset_at = reset_header(r);
  return a;
}

ResultAnswer classify_result(const HttpResponse& r) {
  ResultAnswer a;
  StatusAnswer s = classify_status(r);
  a.verdict = s.verdict;
  a.message = s.message;
  a.reset_at = s.reset_at;
  if (s.verdict != Verdict::ok) return a;
  if (s.status != "COMPLETED") {
    a.verdict = Verdict::retry;
    a.message = "result fetched while " + s.status;
    return a;
  }
  auto j = parse_json(r.body);
  a.output_url = j->contains("output") ? output_url_of((*j)["output"]) : "";
  if (a.output_url.empty()) {
    a.verdict = Verdict::bug;
    a.message = "COMPLETED result without an output URL: " + clip(r.body);
    return a;
  }
  if (j->contains("metrics") && (*j)["metrics"].is_object()) {
    const auto& m = (*j)["metrics"];
    a.metrics_json = m.dump();
    if (m.contains("cost") && m["cost"].is_number()) a.cost = m["cost"].get<double>();
    if (m.contains("remaining_credits") && m["remaining_credits"].is_number())
      a.remaining_credits = m["remaining_credits"].get<double>();
    // Timings teach the poll policy; a value that is not a plausible duration is left out.
    auto seconds_of = [&](const char* k) -> std::optional<double> {
      if (!m.contains(k) || !m[k].is_number()) return std::nullopt;
      double v = m[k].get<double>();
      return std::isfinite(v) && v >= 0 && v <= 86400 ? std::optional<double>(v) : std::nullopt;
    };
    a.inference_time = seconds_of("inference_time");
    a.queue_time = seconds_of("queue_time");
  }
  return a;
}

UploadAnswer classify_upload(const HttpResponse& r) {
  UploadAnswer a;
  if (r.error != NetError::none) {
    a.verdict = r.error == NetError::refused_url ? Verdict::bug : Verdict::retry;
    a.message = error_message(r);
    return a;
  }
  if (r.status >= 200 && r.status < 300) {
    auto j = parse_json(r.body);
    if (j && j->is_object() && j->contains("file_urls") && (*j)["file_urls"].is_array() &&
        !(*j)["file_urls"].empty() && (*j)["file_urls"][0].is_string()) {
      a.verdict = Verdict::ok;
      a.url = (*j)["file_urls"][0].get<std::string>();
      return a;
    }
    a.verdict = Verdict::retry;
    a.message = "upload answered without file_urls: " + clip(r.body);
    return a;
  }
  a.message = error_message(r);
  a.verdict = common_error(r, a.message);
  if (a.verdict == Verdict::rate_limited) a.reset_at = reset_header(r);
  return a;
}

}  // namespace wb
