#include "jobs/curl_transport.h"

#include <curl/curl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <cctype>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>

#include "jobs/util.h"

namespace wb {

namespace {

// Easy handles kept for reuse: each new one costs a dozen allocations.
constexpr size_t kSpareHandles = 64;

struct Transfer {
  HttpRequest request;
  HttpCallback done;
  HttpResponse response;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  int redirects = 0;
  bool too_large = false;
  bool write_failed = false;
  bool restarted = false;  // a 200 to a Range request: the file was truncated
  bool error_body_capped = false;  // a non-2xx body reached kMaxErrorBodyBytes
  std::string deadline_text;  // set when the size-scaled deadline passed
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  char error_buffer[CURL_ERROR_SIZE] = {};

  // Where a finished transfer's easy handle goes back for the next request
  // (curl_easy_reset clears every option; the connections live in the multi).
  std::vector<CURL*>* spare = nullptr;

  ~Transfer() {
    if (headers) curl_slist_free_all(headers);
    if (!easy) return;
    if (spare && spare->size() < kSpareHandles) {
      curl_easy_reset(easy);
      spare->push_back(easy);
    } else {
      curl_easy_cleanup(easy);
    }
  }
};

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {
    t->response.headers.clear();  // a new response (after a 100 or a redirect)
    return size * n;
  }
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
      value.pop_back();
    t->response.headers[name] = value;
  }
  return size * n;
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t len = size * n;
  long code = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
  bool redirecting = t->request.max_redirects > 0 && code >= 300 && code < 400;
  if (redirecting) {
    // A redirect's own body is discarded, and read no further than an error
    // page's: an endless one would hold the slot for the download's deadline.
    t->response.body_bytes += static_cast<long long>(len);
    if (t->response.body_bytes <= kMaxErrorBodyBytes) return len;
    t->error_body_capped = true;
    return 0;
  }
  if (code < 200 || code >= 300) {
    // An error page is only read for its message: keep the start, and stop
    // reading (the connection is closed) instead of holding a huge body.
    long long room = std::min(kMaxErrorBodyBytes, t->request.max_body_bytes) - t->response.body_bytes;
    size_t keep = static_cast<size_t>(std::clamp<long long>(room, 0, static_cast<long long>(len)));
    t->response.body.append(data, keep);
    t->response.body_bytes += static_cast<long long>(keep);
    if (keep == len) return len;
    t->error_body_capped = true;
    return 0;
  }
  // libcurl 7.88 does not enforce CURLOPT_MAXFILESIZE when the length is not
  // announced, so the cap is enforced here, on every chunk.
  if (t->response.body_bytes + static_cast<long long>(len) > t->request.max_body_bytes) {
    t->too_large = true;
    return 0;
  }
  t->response.body_bytes += static_cast<long long>(len);
  bool to_file = t->request.sink_fd >= 0 && code >= 200 && code < 300;
  if (to_file && code == 200 && t->request.resume_from > 0 && !t->restarted) {
    t->restarted = true;  // the server ignored the Range: start the file over
    if (::ftruncate(t->request.sink_fd, 0) != 0 || ::lseek(t->request.sink_fd, 0, SEEK_SET) != 0) {
      t->write_failed = true;
      return 0;
    }
  }
  if (!to_file) {
    t->response.body.append(data, len);
    return len;
  }
  size_t off = 0;
  while (off < len) {
    ssize_t w = ::write(t->request.sink_fd, data + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      t->write_failed = true;
      t->response.error_text = std::string("writing the download: ") + std::strerror(errno);
      return 0;
    }
    off += static_cast<size_t>(w);
  }
  return len;
}

// `reference` (absolute, or relative to `base`) as an absolute URL; "" when
// either cannot be parsed.
std::string resolve_url(const std::string& base, const std::string& reference) {
  if (reference.empty()) return "";
  CURLU* u = curl_url();
  if (!u) return "";
  std::string out;
  char* text = nullptr;
  if (curl_url_set(u, CURLUPART_URL, base.c_str(), 0) == CURLUE_OK &&
      curl_url_set(u, CURLUPART_URL, reference.c_str(), 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_URL, &text, 0) == CURLUE_OK && text) {
    out = text;
  }
  curl_free(text);
  curl_url_cleanup(u);
  return out;
}

bool connect_phase(CURLcode c) {
  switch (c) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
      return true;
    default:
      return false;
  }
}

}  // namespace

struct CurlTransport::Impl {
  CURLM* multi = nullptr;
  bool allow_loopback_http = false;
  // libcurl's socket interface (curl_multi_socket_action): it says which sockets
  // to wait on and when its next timeout is due, and perform() hands each event
  // to its socket alone. curl_multi_perform, used before, walked every transfer
  // at each wake-up and polled each one's socket: with 5,000 jobs in flight, 16
  // poll() calls a request (docs/BENCHMARKS.md, session 11).
  std::map<curl_socket_t, short> sockets;  // what to wait for on each (POLLIN, POLLOUT)
  std::optional<std::chrono::steady_clock::time_point> timer;  // libcurl's next timeout

  static int on_socket(CURL*, curl_socket_t s, int what, void* user, void*) {
    auto* self = static_cast<Impl*>(user);
    if (what == CURL_POLL_REMOVE) {
      self->sockets.erase(s);
    } else {
      short events = 0;
      if (what & CURL_POLL_IN) events |= POLLIN;
      if (what & CURL_POLL_OUT) events |= POLLOUT;
      self->sockets[s] = events;
    }
    return 0;
  }
  static int on_timer(CURLM*, long timeout_ms, void* user) {
    auto* self = static_cast<Impl*>(user);
    if (timeout_ms < 0)
      self->timer.reset();
    else
      self->timer = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    return 0;
  }

  std::vector<CURL*> spare;  // see kSpareHandles; declared first, so it outlives every Transfer
  std::vector<std::unique_ptr<Transfer>> transfers;
  // Requests refused before they started; answered on the next perform() so a
  // callback never runs inside start().
  std::vector<std::unique_ptr<Transfer>> refused;

  void add(std::unique_ptr<Transfer> t) {
    if (!url_allowed(t->request.url, allow_loopback_http)) {
      t->response.error = NetError::refused_url;
      t->response.error_text = "refused URL (only https, or http to loopback when allowed): " + t->request.url;
      refused.push_back(std::move(t));
      return;
    }
    CURL* e = nullptr;
    if (!spare.empty()) {
      e = spare.back();
      spare.pop_back();
    } else {
      e = curl_easy_init();
    }
    t->easy = e;
    t->spare = &spare;
    curl_easy_setopt(e, CURLOPT_URL, t->request.url.c_str());
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, allow_loopback_http ? "http,https" : "https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "wanbatch/0.1");
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t.get());
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
    curl_easy_setopt(e, CURLOPT_PRIVATE, t.get());
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error_buffer);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(t->request.connect_timeout.count()));
    if (t->request.timeout.count() > 0)
      curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(t->request.timeout.count()));
    // A stalled transfer is given up, whatever the total timeout. libcurl counts
    // the stall in whole seconds.
    long stall_seconds = static_cast<long>(std::max<int64_t>(1, (t->request.stall_time.count() + 999) / 1000));
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, static_cast<long>(std::max(1LL, t->request.min_bytes_per_second)));
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, stall_seconds);
    if (t->request.connection == ConnectionUse::fresh) {
      curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
      curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    }
    for (const auto& h : t->request.headers) t->headers = curl_slist_append(t->headers, h.c_str());
    if (t->request.method == "POST") {
      curl_easy_setopt(e, CURLOPT_POST, 1L);
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(t->request.body.size()));
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->request.body.data());
      t->headers = curl_slist_append(t->headers, "Expect:");
    } else if (t->request.method != "GET") {
      curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, t->request.method.c_str());
    }
    if (t->request.resume_from > 0)
      curl_easy_setopt(e, CURLOPT_RESUME_FROM_LARGE, static_cast<curl_off_t>(t->request.resume_from));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    curl_multi_add_handle(multi, e);
    transfers.push_back(std::move(t));
  }

  // Cuts short the transfers past their size-scaled deadline, and returns how
  // long until the next deadline may pass: while one runs, at most a second,
  // since an announced length can arrive at any moment; without one, forever.
  std::chrono::milliseconds cut_overdue() {
    using namespace std::chrono;
    auto now = steady_clock::now();
    milliseconds next = milliseconds::max();
    std::vector<CURL*> overdue;
    for (const auto& t : transfers) {
      if (t->request.deadline_expected_bytes <= 0) continue;
      curl_off_t announced = -1;
      curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &announced);
      milliseconds limit = transfer_deadline(t->request, announced);
      auto left = duration_cast<milliseconds>(t->started + limit - now);
      if (left.count() <= 0) {
        t->deadline_text = "no complete answer within the deadline of " +
                           std::to_string(duration_cast<seconds>(limit).count()) + " s (" +
                           (announced >= 0 ? std::to_string(announced) + " bytes announced"
                                           : std::to_string(t->request.deadline_expected_bytes) + " bytes assumed") +
                           " at " + std::to_string(t->request.min_bytes_per_second) + " bytes/s)";
        overdue.push_back(t->easy);
      } else {
        next = std::min({next, left, milliseconds(seconds(1))});
      }
    }
    for (CURL* easy : overdue) finish(easy, CURLE_OPERATION_TIMEDOUT);
    return next;
  }

  // Sends t's request again to `url` from byte `resume_from` of its sink (which
  // is cut back to that length), with the same callback.
  void send_again(std::unique_ptr<Transfer> t, const std::string& url, long long resume_from, int redirects) {
    auto again = std::make_unique<Transfer>();
    again->request = t->request;
    again->request.url = url;
    again->request.resume_from = resume_from;
    again->done = std::move(t->done);
    again->redirects = redirects;
    const int sink = again->request.sink_fd;
    if (sink >= 0 && (::ftruncate(sink, resume_from) != 0 || ::lseek(sink, resume_from, SEEK_SET) != resume_from)) {
      again->response.error = NetError::local_write;
      again->response.error_text = std::string("writing the download: ") + std::strerror(errno);
      refused.push_back(std::move(again));  // answered on the next perform()
      return;
    }
    t.reset();
    add(std::move(again));
  }

  void finish(CURL* easy, CURLcode code) {
    auto it = std::find_if(transfers.begin(), transfers.end(),
                           [&](const auto& t) { return t->easy == easy; });
    if (it == transfers.end()) return;
    std::unique_ptr<Transfer> t = std::move(*it);
    transfers.erase(it);
    curl_multi_remove_handle(multi, easy);
    HttpResponse& r = t->response;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r.status);
    // A redirect: libcurl calls a 3xx to a Range request a range error.
    const bool redirect = t->request.max_redirects > 0 && r.status >= 300 && r.status < 400 &&
                          (code == CURLE_OK || code == CURLE_RANGE_ERROR || t->error_body_capped);
    if (code != CURLE_OK && t->error_body_capped && !redirect) {
      // Not an error: the answer's status stands, with the start of its body.
    } else if (!redirect && t->request.resume_from > 0 && t->request.sink_fd >= 0 &&
               (code == CURLE_RANGE_ERROR ||
                (code == CURLE_OK && r.status == 200 && r.body_bytes == 0 && !t->restarted))) {
      // The server ignored the Range: a 200 with the whole file (libcurl stops
      // there with a range error), or one as long as the bytes already there
      // ("already downloaded" to libcurl, no body read). The download starts
      // over from its first byte, once.
      const std::string url = t->request.url;
      const int redirects = t->redirects;
      send_again(std::move(t), url, 0, redirects);
      return;
    } else if (code != CURLE_OK && !redirect) {
      curl_off_t pretransfer = 0;
      curl_easy_getinfo(easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
      std::string why = t->error_buffer[0] ? t->error_buffer : curl_easy_strerror(code);
      if (!t->deadline_text.empty()) {
        r.error = pretransfer == 0 ? NetError::not_sent : NetError::unknown_outcome;
        r.error_text = t->deadline_text;
      } else if (t->too_large) {
        r.error = NetError::too_large;
        r.error_text = "response larger than " + std::to_string(t->request.max_body_bytes) + " bytes";
      } else if (t->write_failed) {
        r.error = NetError::local_write;
      } else if (connect_phase(code) || pretransfer == 0) {
        r.error = NetError::not_sent;
        r.error_text = why;
      } else {
        r.error = NetError::unknown_outcome;
        r.error_text = why;
      }
    } else if (redirect) {
      char* where = nullptr;
      curl_easy_getinfo(easy, CURLINFO_REDIRECT_URL, &where);
      // After a range error libcurl names no redirect URL: the Location header,
      // taken relative to the URL asked.
      const std::string next = where ? std::string(where) : resolve_url(t->request.url, r.header("location"));
      if (!next.empty() && t->redirects < t->request.max_redirects) {
        // The same request at the new place, Range and all: nothing of the
        // redirect's own body was written, so the file stays as it was.
        const long long resume_from = t->request.resume_from;
        const int redirects = t->redirects + 1;
        send_again(std::move(t), next, resume_from, redirects);
        return;
      }
      r.error = NetError::refused_url;
      r.error_text = next.empty() ? "a redirect without a usable Location" : "too many redirects";
    }
    auto done = std::move(t->done);
    HttpResponse out = std::move(t->response);
    t.reset();
    done(std::move(out));
  }
};

CurlTransport::CurlTransport(bool allow_loopback_http) : impl_(std::make_unique<Impl>()) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  impl_->multi = curl_multi_init();
  impl_->allow_loopback_http = allow_loopback_http;
  // No per-host cap here: the engine caps what it sends (Core::kWireCap for API
  // calls, limits.max_concurrent_downloads and _uploads for files). A cap of 32 per
  // host made submits and polls queue inside libcurl behind slow downloads served
  // from the API's own host.
  // Idle connections kept for reuse. libcurl's default follows the number of
  // transfers added, so a lull closed connections the next burst opened again.
  curl_multi_setopt(impl_->multi, CURLMOPT_MAXCONNECTS, 64L);
  curl_multi_setopt(impl_->multi, CURLMOPT_SOCKETFUNCTION, &Impl::on_socket);
  curl_multi_setopt(impl_->multi, CURLMOPT_SOCKETDATA, impl_.get());
  curl_multi_setopt(impl_->multi, CURLMOPT_TIMERFUNCTION, &Impl::on_timer);
  curl_multi_setopt(impl_->multi, CURLMOPT_TIMERDATA, impl_.get());
}

CurlTransport::~CurlTransport() {
  for (auto& t : impl_->transfers) curl_multi_remove_handle(impl_->multi, t->easy);
  impl_->transfers.clear();
  impl_->refused.clear();
  for (CURL* e : impl_->spare) curl_easy_cleanup(e);
  impl_->spare.clear();
  curl_multi_cleanup(impl_->multi);
}

void CurlTransport::start(HttpRequest request, HttpCallback done) {
  auto t = std::make_unique<Transfer>();
  t->request = std::move(request);
  t->done = std::move(done);
  impl_->add(std::move(t));
}

size_t CurlTransport::active() const { return impl_->transfers.size() + impl_->refused.size(); }

void CurlTransport::perform(std::chrono::milliseconds max_wait, std::span<pollfd> extra) {
  using namespace std::chrono;
  // libcurl's sockets first, then the caller's (a negative fd is ignored by poll).
  std::vector<pollfd> fds;
  fds.reserve(impl_->sockets.size() + extra.size());
  for (const auto& [fd, events] : impl_->sockets) fds.push_back({fd, events, 0});
  const size_t first_extra = fds.size();
  for (pollfd& x : extra) {
    x.revents = 0;
    fds.push_back({x.fd, x.events, 0});
  }
  if (!impl_->refused.empty()) max_wait = milliseconds(0);
  max_wait = std::min(max_wait, impl_->cut_overdue());
  if (impl_->timer) {
    auto due = ceil<milliseconds>(*impl_->timer - steady_clock::now());
    max_wait = std::min(max_wait, std::max(due, milliseconds(0)));
  }
  const int ready = ::poll(fds.data(), fds.size(), static_cast<int>(std::clamp<int64_t>(max_wait.count(), 0, 1 << 30)));
  for (size_t i = 0; i < extra.size(); ++i) extra[i].revents = fds[first_extra + i].revents;
  int running = 0;
  for (size_t i = 0; ready > 0 && i < first_extra; ++i) {
    const short r = fds[i].revents;
    if (r == 0) continue;
    int events = 0;
    if (r & (POLLIN | POLLHUP)) events |= CURL_CSELECT_IN;
    if (r & POLLOUT) events |= CURL_CSELECT_OUT;
    if (r & (POLLERR | POLLNVAL)) events |= CURL_CSELECT_ERR;
    curl_multi_socket_action(impl_->multi, fds[i].fd, events, &running);
  }
  // A timeout that is due (a new transfer to start, a connect or stall limit):
  // the timer is one-shot; libcurl sets the next one while it runs.
  if (impl_->timer && steady_clock::now() >= *impl_->timer) {
    impl_->timer.reset();
    curl_multi_socket_action(impl_->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  }
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(impl_->multi, &left)) {
    if (msg->msg == CURLMSG_DONE) impl_->finish(msg->easy_handle, msg->data.result);
  }
  impl_->cut_overdue();
  auto refused = std::move(impl_->refused);
  impl_->refused.clear();
  // Every refused request is answered, even when one answer's callback throws
  // (a store write on a full disk): the first exception is rethrown after.
  std::exception_ptr failed;
  for (auto& t : refused) {
    auto done = std::move(t->done);
    try {
      done(std::move(t->response));
    } catch (...) {
      if (!failed) failed = std::current_exception();
    }
  }
  if (failed) std::rethrow_exception(failed);
}

}  // namespace wb
