#include "tests/support.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "jobs/subprocess.h"

extern char** environ;

namespace test {

std::string cwd() {
  char buf[4096];
  return ::getcwd(buf, sizeof buf) ? buf : ".";
}

void write(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  REQUIRE_MESSAGE(out.good(), "cannot write " << path);
}

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

void mkdirs(const std::string& path) { std::filesystem::create_directories(path); }

std::vector<std::string> list(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (!name.empty() && name[0] != '.') out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string png(int variant) {
  auto be = [](uint32_t v) {
    std::string s(4, '\0');
    s[0] = static_cast<char>(v >> 24);
    s[1] = static_cast<char>(v >> 16);
    s[2] = static_cast<char>(v >> 8);
    s[3] = static_cast<char>(v);
    return s;
  };
  auto chunk = [&](const std::string& type, const std::string& data) {
    std::string td = type + data;
    uLong crc = crc32(0, reinterpret_cast<const Bytef*>(td.data()), static_cast<uInt>(td.size()));
    return be(static_cast<uint32_t>(data.size())) + td + be(static_cast<uint32_t>(crc));
  };
  const int w = 16, h = 9;
  std::string raw;
  for (int y = 0; y < h; ++y) {
    raw.push_back('\0');
    for (int x = 0; x < w; ++x) {
      raw.push_back(static_cast<char>(40 + variant * 7));
      raw.push_back(static_cast<char>(120 + x));
      raw.push_back(static_cast<char>(200 - y));
    }
  }
  uLongf len = compressBound(raw.size());
  std::string z(len, '\0');
  compress(reinterpret_cast<Bytef*>(z.data()), &len, reinterpret_cast<const Bytef*>(raw.data()), raw.size());
  z.resize(len);
  std::string ihdr = be(w) + be(h) + std::string("\x08\x02\x00\x00\x00", 5);
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr) + chunk("IDAT", z) + chunk("IEND", "");
}

FakeTransport::Call FakeTransport::take(const std::string& part) {
  for (auto it = calls.begin(); it != calls.end(); ++it) {
    if (it->request.url.find(part) != std::string::npos) {
      Call c = std::move(*it);
      calls.erase(it);
      return c;
    }
  }
  std::string seen;
  for (const auto& c : calls) seen += " " + c.request.method + " " + c.request.url;
  FAIL("no request to '" << part << "'; pending:" << seen);
  return {};
}

bool FakeTransport::has(const std::string& part) const {
  return std::any_of(calls.begin(), calls.end(),
                     [&](const Call& c) { return c.request.url.find(part) != std::string::npos; });
}

void FakeTransport::reply(Call& call, long status, const std::string& body,
                          std::map<std::string, std::string> headers) {
  wb::HttpResponse r;
  r.status = status;
  r.body = body;
  r.body_bytes = static_cast<long long>(body.size());
  r.headers = std::move(headers);
  call.done(std::move(r));
}

void FakeTransport::fail(Call& call, wb::NetError error) {
  wb::HttpResponse r;
  r.error = error;
  r.error_text = "injected";
  call.done(std::move(r));
}

void FakeTransport::deliver(Call& call, const std::string& data, long status) {
  REQUIRE(call.request.sink_fd >= 0);
  REQUIRE(::write(call.request.sink_fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
  wb::HttpResponse r;
  r.status = status;
  r.body_bytes = static_cast<long long>(data.size());
  call.done(std::move(r));
}

Process::Process(std::vector<std::string> argv, std::map<std::string, std::string> env,
                 const std::string& log_file) {
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    std::string k = kv.substr(0, kv.find('='));
    if (!env.count(k)) envs.push_back(kv);
  }
  for (auto& [k, v] : env) envs.push_back(k + "=" + v);
  std::vector<char*> cargv, cenv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  for (auto& e : envs) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (!log_file.empty()) {
    posix_spawn_file_actions_addopen(&fa, 1, log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
  }
  int rc = posix_spawn(&pid_, cargv[0], &fa, nullptr, cargv.data(), cenv.data());
  posix_spawn_file_actions_destroy(&fa);
  REQUIRE_MESSAGE(rc == 0, "cannot start " << argv[0] << ": " << std::strerror(rc));
}

Process::~Process() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    wait();
  }
}

void Process::signal(int sig) { ::kill(pid_, sig); }

bool Process::running() {
  if (status_ != -1) return false;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = st;
    return false;
  }
  return true;
}

int Process::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

int run(const std::vector<std::string>& argv, std::string* output, std::map<std::string, std::string> env) {
  std::string log = cwd() + "/.run-" + std::to_string(::getpid()) + ".log";
  ::unlink(log.c_str());
  int code;
  {
    Process p(argv, std::move(env), log);
    code = p.wait(std::chrono::seconds(60));
  }
  if (output) *output = read(log);
  ::unlink(log.c_str());
  return code;
}

std::string config_yaml(const std::string& root, const std::string& base_url, const std::string& extra,
                        double settle_seconds) {
  std::string storage = base_url + "/upload-asset";
  return "api:\n"
         "  base_url: " + base_url + "\n"
         "  storage_url: " + storage + "\n"
         "  allow_loopback_http: true\n"
         "  request_timeout_seconds: 10\n"
         "spool:\n"
         "  incoming: " + root + "/spool/incoming\n"
         "  done: " + root + "/spool/done\n"
         "  failed: " + root + "/spool/failed\n"
         "  settle_seconds: " + std::to_string(settle_seconds) + "\n"
         "state_dir: " + root + "/state\n"
         "output_root: " + root + "/out\n"
         "input_roots: [" + root + "/media]\n"
         "limits: {max_in_flight: 8, submits_per_minute: 60000}\n"
         "credits: {check_interval_seconds: 0.5}\n"
         "poll: {min_interval_seconds: 0.05, max_interval_seconds: 0.3}\n"
         "retry: {max_attempts: 5, base_delay_seconds: 0.05, max_delay_seconds: 0.5}\n" +
         // No metrics endpoint unless a test asks: tests run side by side.
         (extra.find("metrics:") == std::string::npos ? "metrics: {listen: \"\"}\n" : "") + extra;
}

wb::Config make_config(const std::string& root, const std::string& base_url) {
  for (const char* d : {"/spool/incoming", "/spool/done", "/spool/failed", "/spool/active", "/state", "/out", "/media"})
    mkdirs(root + d);
  std::string url = base_url;
  return wb::parse_config(config_yaml(root, url), root + "/wanbatch.yaml");
}

std::string base64_decode(const std::string& text) {
  static const std::string chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int val = 0, bits = -8;
  for (char c : text) {
    auto pos = chars.find(c);
    if (pos == std::string::npos) break;
    val = ((val << 6) + static_cast<int>(pos)) & 0xffffff;
    bits += 6;
    if (bits >= 0) {
      out.push_back(static_cast<char>((val >> bits) & 0xff));
      bits -= 8;
    }
  }
  return out;
}

bool have_tool(const std::string& tool) { return run({"/bin/sh", "-c", "command -v " + tool + " >/dev/null"}) == 0; }

std::string frame_pixels(const std::string& file, int n) {
  wb::SubprocessSpec s;
  s.argv = {"ffmpeg", "-v", "error", "-nostdin", "-i", file};
  if (n >= 0) s.argv.insert(s.argv.end(), {"-vf", "select=eq(n\\," + std::to_string(n) + ")", "-vsync", "0"});
  s.argv.insert(s.argv.end(), {"-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"});
  s.env = wb::helper_env();
  s.max_output_bytes = 32 << 20;
  auto r = wb::run_subprocess(s);
  REQUIRE_MESSAGE(r.ok(), "ffmpeg on " << file << ": " << r.describe());
  REQUIRE_MESSAGE(!r.out.empty(), "ffmpeg decoded no frame " << n << " of " << file);
  return r.out;
}

}  // namespace test
