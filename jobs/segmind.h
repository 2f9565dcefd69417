// The Segmind API as pure functions: building requests and classifying answers
// (SEGMIND_API.md). No I/O here, so every status and body shape is unit-tested.
#pragma once

#include <optional>
#include <string>

#include "jobs/settings.h"
#include "jobs/http.h"
#include "jobs/shot.h"
#include "jobs/util.h"

namespace wb {

// What the caller must do with an answer. docs/ERRORS.md lists the action for each.
enum class Verdict {
  ok,
  retry,         // transient (5xx, not sent, timeout on a safe call): try again later
  rate_limited,  // 429: wait for the reset time
  ambiguous,     // a submit that may have started a job: never resend by itself
  rejected,      // 400 / 410: the parameters or the model are refused
  auth,          // 401 / 403: the key is wrong; pause everything
  credits,       // 406 Insufficient credits / spend limit: pause submits
  bug,           // 405, 406 Invalid content type, malformed answers: needs a person
  failed,        // 422 / FAILED: the provider's verdict
  not_found,     // 404 for a known request: the record expired
};

const char* to_string(Verdict v);

struct SubmitAnswer {
  Verdict verdict = Verdict::bug;
  std::string request_id;
  std::string message;
  std::optional<TimePoint> reset_at;  // for rate_limited
};

struct StatusAnswer {
  Verdict verdict = Verdict::bug;
  std::string status;  // QUEUED, PROCESSING, COMPLETED, FAILED when ok/failed
  std::string message;
  std::optional<TimePoint> reset_at;
};

struct ResultAnswer {
  Verdict verdict = Verdict::bug;
  std::string output_url;
  std::optional<double> cost;
  std::optional<double> remaining_credits;
  // Seconds the job rendered and waited in the provider's queue (metrics), when given.
  std::optional<double> inference_time, queue_time;
  std::string metrics_json;
  std::string message;
  std::optional<TimePoint> reset_at;
};

struct UploadAnswer {
  Verdict verdict = Verdict::bug;
  std::string url;
  std::string message;
  std::optional<TimePoint> reset_at;
};

std::string submit_url(const ApiConfig& api);
std::string status_url(const ApiConfig& api, const std::string& request_id);
std::string result_url(const ApiConfig& api, const std::string& request_id);
std::string credits_url(const ApiConfig& api);
// Whether `id` is a request_id we may follow: [A-Za-z0-9][A-Za-z0-9._-]{0,127}.
// status_url and result_url percent-encode it besides.
bool is_plain_token(std::string_view id);

// The JSON body of a submit: the shot's parameters with uploaded media URLs.
std::string submit_body(const Shot& shot);
std::string upload_body(const std::string& mime, const std::string& data);

SubmitAnswer classify_submit(const HttpResponse& r);
StatusAnswer classify_status(const HttpResponse& r);
ResultAnswer classify_result(const HttpResponse& r);
UploadAnswer classify_upload(const HttpResponse& r);

// The balance from a /v1/get-user-credits answer, when it is one.
std::optional<double> parse_credits(const HttpResponse& r);

// The human-readable message of an error answer: the JSON "error" field, plain
// text, or a note for an HTML page. Bounded in length.
std::string error_message(const HttpResponse& r);

}  // namespace wb
