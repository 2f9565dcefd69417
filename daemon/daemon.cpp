#include "daemon/daemon.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <functional>
#include <thread>

#include "daemon/commands.h"
#include "daemon/contact_sheets.h"
#include "daemon/control.h"
#include "daemon/metrics.h"
#include "daemon/notifier.h"
#include "daemon/watcher.h"
#include "jobs/crash_point.h"
#include "jobs/curl_transport.h"
#include "jobs/log_context.h"
#include "jobs/manifest.h"
#include "jobs/engine/scheduler.h"
#include "jobs/store.h"
#include "jobs/subprocess.h"
#include "jobs/util.h"

namespace wb {

namespace {

constexpr Millis kDrainTimeout{20000};
constexpr const char* kSpoolLockName = ".wanbatch.lock";
// Manifests are claimed (renamed) into this folder of spool.incoming before they
// are read, so the daemon moves on exactly the bytes it read.
constexpr const char* kClaimDirName = ".claimed";

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  s.erase(0, s.find_first_not_of(" \t\r\n"));
  return s;
}

std::string read_key_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw Error("cannot read the key file " + path + ": " + std::strerror(errno));
  if (st.st_mode & (S_IROTH | S_IWOTH))
    throw Error("the key file " + path + " is readable or writable by others; chmod o-rwx it");
  std::string key = trim(read_file(path, 4096));
  if (key.empty()) throw Error("the key file " + path + " is empty");
  return key;
}

// An exclusive flock on a lock file, held for the life of the object, with
// `content` written into the file for whoever finds it taken. On conflict the
// holder's content goes to `busy`, whose message is thrown as a wb::Error.
class FileLock {
 public:
  FileLock(const std::string& path, const std::string& content,
           const std::function<std::string(const std::string& holder)>& busy)
      : path_(path), content_(content) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd_ < 0) throw Error("cannot open " + path + ": " + std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      char buf[4096] = {};
      ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
      std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
      ::close(fd_);
      fd_ = -1;
      throw Error(busy(holder));
    }
    if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, content.data(), content.size(), 0) < 0) {
      // The content is informational only.
    }
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

  // Whether the lock is still ours at its path. A flock lives on the file, not
  // the name: a lock file deleted or replaced (a clean-up job) would let a second
  // daemon lock a new one. A missing or replaced file is locked again here;
  // false when another process holds the file now at the path.
  bool still_ours() {
    struct stat held {}, now {};
    if (::fstat(fd_, &held) == 0 && ::lstat(path_.c_str(), &now) == 0 && held.st_dev == now.st_dev &&
        held.st_ino == now.st_ino)
      return true;
    int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
      spdlog::error("the lock file {} was replaced by something that cannot be locked: {}", path_,
                    std::strerror(errno));
      return false;
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      spdlog::error("the lock file {} was replaced, and another process holds the new one", path_);
      ::close(fd);
      return false;
    }
    if (::ftruncate(fd, 0) == 0 && ::pwrite(fd, content_.data(), content_.size(), 0) < 0) {
      // informational only
    }
    ::close(fd_);
    fd_ = fd;
    spdlog::warn("the lock file {} was removed or replaced; locked again", path_);
    return true;
  }

 private:
  std::string path_;
  std::string content_;
  int fd_ = -1;
};

// state_dir/wanbatch.lock: one daemon per state directory. Holds the pid.
FileLock lock_state_dir(const std::string& state_dir) {
  return FileLock(join_path(state_dir, "wanbatch.lock"), std::to_string(::getpid()) + "\n",
                  [&](const std::string& holder) {
                    std::string pid = trim(holder);
                    return "another wanbatch daemon (pid " + (pid.empty() ? "?" : pid) +
                           ") is already using the state directory " + state_dir;
                  });
}

// spool.incoming/.wanbatch.lock: one daemon per spool, or every manifest would
// be taken (and every shot billed) once per daemon. Holds the pid and the
// state_dir, one a line; the watcher ignores the dot-name.
FileLock lock_spool(const std::string& incoming, const std::string& state_dir) {
  return FileLock(join_path(incoming, kSpoolLockName), std::to_string(::getpid()) + "\n" + state_dir + "\n",
                  [&](const std::string& holder) {
                    auto nl = holder.find('\n');
                    std::string pid = trim(holder.substr(0, nl));
                    std::string dir = nl == std::string::npos ? "" : trim(holder.substr(nl + 1));
                    return "another wanbatch daemon (pid " + (pid.empty() ? "?" : pid) + ", state_dir " +
                           (dir.empty() ? "?" : dir) + ") is already taking manifests from spool.incoming " +
                           incoming + "; two daemons on one spool would render (and bill) every shot twice";
                  });
}

// Missing folders (a share not yet mounted) are waited for, never created blindly,
// except spool.active, which is wanbatch's own.
bool wait_for_folders(const Config& c, int signal_fd) {
  const std::pair<const char*, std::string> needed[] = {{"state_dir", c.state_dir},
                                                         {"spool.incoming", c.spool.incoming},
                                                         {"spool.done", c.spool.done},
                                                         {"spool.failed", c.spool.failed},
                                                         {"output_root", c.output_root}};
  auto last_note = std::chrono::steady_clock::time_point{};
  for (;;) {
    std::string missing;
    for (const auto& [key, dir] : needed)
      if (!is_dir(dir)) missing += std::string(missing.empty() ? "" : ", ") + key + " (" + dir + ")";
    if (missing.empty() && !is_dir(c.spool.active) && is_dir(dirname_of(c.spool.active)))
      ::mkdir(c.spool.active.c_str(), 0755);
    if (missing.empty() && !is_dir(c.spool.active)) missing = "spool.active (" + c.spool.active + ")";
    if (missing.empty()) return true;
    auto now = std::chrono::steady_clock::now();
    if (now - last_note > std::chrono::seconds(30)) {
      spdlog::warn("waiting for missing folders: {}", missing);
      sd_notifyf(0, "STATUS=waiting for missing folders: %s", missing.c_str());
      last_note = now;
    }
    struct signalfd_siginfo si {};
    while (::read(signal_fd, &si, sizeof si) == sizeof si)
      if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

std::string unique_target(const std::string& dir, const std::string& name) {
  std::string target = join_path(dir, name);
  struct stat st {};
  if (::lstat(target.c_str(), &st) != 0) return target;
  return join_path(dir, name + "." + std::to_string(to_epoch_ms(std::chrono::system_clock::now())));
}

class Daemon {
 public:
  Daemon(Config& c, std::string key, int signal_fd, FileLock& spool_lock)
      : c_(c),
        spool_lock_(spool_lock),
        transport_(c.api.allow_loopback_http),
        store_(Store::open(join_path(c.state_dir, "db"), Store::Mode::read_write)),
        scheduler_(c, *store_, transport_, [] { return std::chrono::system_clock::now(); },
                   [] { return std::chrono::steady_clock::now(); }, std::move(key), /*threads=*/true),
        metrics_(c.metrics_listen, scheduler_, [] { return std::chrono::steady_clock::now(); },
                 [] { return std::chrono::system_clock::now(); }),
        watcher_(c.spool.incoming, Millis(static_cast<int64_t>(c.spool.settle_seconds * 1000))),
        control_(control_socket_path(c.state_dir)),
        signal_fd_(signal_fd),
        claim_dir_(join_path(c.spool.incoming, kClaimDirName)) {
    // Private to the daemon, inside spool.incoming so a claim is a rename on one filesystem.
    if (::mkdir(claim_dir_.c_str(), 0700) != 0 && errno != EEXIST)
      throw Error("cannot create " + claim_dir_ + ": " + std::strerror(errno));
    struct stat st {};
    if (::lstat(claim_dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      throw Error(claim_dir_ + " is not a folder (a symlink?); remove it, wanbatch creates it");
    rules_ = manifest_rules(c);
    scheduler_.on_batch_finished = [this](const BatchRecord& b) { retire_manifest(b); };
    scheduler_.events().subscribe([this](const Event& e) { sheets_.on_event(e); });
    scheduler_.events().subscribe([this](const Event& e) { notifier_.on_event(e); });
    notifier_.on_dropped = [this] { metrics_.notification_dropped(); };
  }

  int run() {
    scheduler_.load();
    retire_finished_in_active();  // a stop between finishing and moving the file
    take_left_claims();
    readopt_lost_batches();
    metrics_.start(*store_);
    sheets_.start();
    notifier_.load();
    sd_notify(0, "READY=1");
    uint64_t watchdog_usec = 0;
    Millis notify_every{5000};
    if (sd_watchdog_enabled(0, &watchdog_usec) > 0)
      notify_every = std::min(notify_every, Millis(static_cast<int64_t>(watchdog_usec / 2000)));
    auto last_notify = std::chrono::steady_clock::time_point{};
    bool stopping = false;
    auto drain_deadline = std::chrono::steady_clock::now();
    for (;;) {
      try {
        MonoPoint now = std::chrono::steady_clock::now();
        Millis watch_next{1000};  // take_ready (re)creates a lost or missing watch itself
        if (!stopping && !spool_lost_) {
          auto ready = watcher_.take_ready(now, watch_next);
          if (!ready.empty() && !spool_lock_.still_ours()) {
            // Another daemon locked the spool after our lock file was removed: taking
            // manifests now would render (and bill) them twice. Serve what we have.
            spool_lost_ = true;
            spdlog::error("the spool lock {}/{} is no longer this daemon's: it takes no more manifests (its jobs go "
                          "on); put the lock file right or stop the other daemon, then restart this one",
                          c_.spool.incoming, kSpoolLockName);
          }
          if (!spool_lost_)
            for (const auto& name : ready) take(name);
        }
        Millis next = std::min({scheduler_.tick(), watch_next, Millis(1000), metrics_.tick(),
                                sheets_.tick(std::chrono::steady_clock::now())});
        notifier_.tick();
        if (std::chrono::steady_clock::now() - last_notify >= notify_every) {
          // The watchdog ping doubles as a liveness proof of the loop itself.
          std::string status = std::to_string(scheduler_.unfinished_batches()) + " batches, " +
                               std::to_string(scheduler_.active_shots()) + " shots under way" +
                               (scheduler_.paused() ? ", submits PAUSED" : "") + (stopping ? ", stopping" : "");
          sd_notifyf(0, "WATCHDOG=1\nSTATUS=%s", status.c_str());
          last_notify = std::chrono::steady_clock::now();
        }
        if (stopping) {
          if (scheduler_.submits_on_the_wire() == 0) break;
          if (std::chrono::steady_clock::now() > drain_deadline) {
            spdlog::warn("stopping with {} submits unanswered; they will be HELD as ambiguous",
                         scheduler_.submits_on_the_wire());
            break;
          }
          next = std::min(next, Millis(100));
        }
        // The control clients' deadlines wake the loop too; their fds are waited on
        // after the watcher's and the signal's.
        next = std::min(next, control_.until_next_deadline(std::chrono::steady_clock::now()));
        // The background fd (a video probe finished) only wakes the loop; tick() takes it up.
        std::vector<pollfd> fds = {{watcher_.fd(), POLLIN, 0}, {signal_fd_, POLLIN, 0},
                                   {scheduler_.background_fd(), POLLIN, 0}};
        auto control_fds = control_.waits();
        fds.insert(fds.end(), control_fds.begin(), control_fds.end());
        transport_.perform(next, fds);
        if (fds[0].revents) watcher_.drain_events();
        auto mono_now = std::chrono::steady_clock::now();
        bool control_ready = std::any_of(fds.begin() + 3, fds.end(), [](const pollfd& p) { return p.revents != 0; });
        if (control_ready || control_.until_next_deadline(mono_now) == Millis(0))
          control_.serve(mono_now, [this](const nlohmann::json& r) { return command(r); });
        bool stop_requested = false;
        if (fds[1].revents) {
          struct signalfd_siginfo si {};
          while (::read(signal_fd_, &si, sizeof si) == sizeof si) {
            switch (si.ssi_signo) {
              case SIGHUP:
                reload();
                break;
              case SIGUSR1:
                log_status();
                break;
              case SIGUSR2:
                spdlog::info("SIGUSR2 received: no action is bound to it");
                break;
              default:  // SIGTERM, SIGINT
                stop_requested = true;
            }
          }
        }
        if (stop_requested) {
          if (!stopping) {
            spdlog::info("stopping: no new submits; waiting for {} submits on the wire",
                         scheduler_.submits_on_the_wire());
            sd_notify(0, "STOPPING=1");
            scheduler_.stop_submitting();
            stopping = true;
            drain_deadline = std::chrono::steady_clock::now() + kDrainTimeout;
          }
        }
      } catch (const Error& e) {
        // A write the state store or the journal refused (a full or failing state
        // disk): nothing that depends on it went out, so the loop serves on and
        // tries again in a second instead of exiting into a restart loop while
        // jobs in flight go unfollowed.
        if (std::chrono::steady_clock::now() - last_error_log_ > std::chrono::seconds(30)) {
          spdlog::error("{} (the daemon serves on and tries again every second)", e.what());
          last_error_log_ = std::chrono::steady_clock::now();
        }
        sd_notifyf(0, "WATCHDOG=1\nSTATUS=error: %s", e.what());  // the loop itself is alive
        // A second's pause that runs no callback (they may write again); a signal
        // ends it early and is read at the next pass.
        pollfd sig{signal_fd_, POLLIN, 0};
        ::poll(&sig, 1, 1000);
      }
    }
    spdlog::info("stopped");
    return 0;
  }

 private:
  // A manifest in spool.active whose batch the state store does not know: the
  // store lost the batch's record (a damaged store). Its shots may have been
  // submitted and billed, so they come back HELD, never PENDING: seen in
  // `status` and the report, and released by a person with `retry --yes`.
  // The manifests in spool.active ("<batch>__<name>") whose batch finished: moved to
  // spool.done. Reads the files there, not every batch of the history (a store with
  // 100,000 finished shots starts as fast as an empty one). A batch name may hold "__"
  // itself: each split is tried, and a batch's file is the one its record names.
  void retire_finished_in_active() {
    DIR* d = ::opendir(c_.spool.active.c_str());
    if (!d) return;
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name[0] != '.' && name.find("__") != std::string::npos) names.push_back(name);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      const std::string path = join_path(c_.spool.active, name);
      for (auto sep = name.find("__"); sep != std::string::npos; sep = name.find("__", sep + 1)) {
        if (sep == 0) continue;
        auto b = store_->batch(name.substr(0, sep));
        if (b && b->finished && b->manifest_path == path) {
          retire_manifest(*b);
          break;
        }
      }
    }
  }

  void readopt_lost_batches() {
    DIR* d = ::opendir(c_.spool.active.c_str());
    if (!d) return;
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name.find("__") != std::string::npos && name[0] != '.') names.push_back(name);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      std::string path = join_path(c_.spool.active, name);
      std::string original = name.substr(name.find("__") + 2);
      ManifestResult r = load_manifest(path, rules_, join_path(c_.spool.incoming, original));
      if (!r.manifest) {
        std::string batch = name.substr(0, name.find("__"));
        if (!store_->batch(batch))
          spdlog::error("{}: in spool.active, but the state store has no batch {} and the file no longer loads:\n{}"
                        "its shots may have been submitted and billed; check the provider's dashboard",
                        path, batch, format_problems(name, r.problems));
        continue;
      }
      auto known = store_->batch(r.manifest->batch);
      if (known && !known->damaged) continue;  // a stand-in (from the journal) is completed
      spdlog::error("batch {}: its manifest {} is in spool.active but the state store lost the batch: taken again "
                    "with every shot HELD",
                    r.manifest->batch, path);
      try {
        scheduler_.accept(*r.manifest, original, path,
                          "state damaged: the state store lost this batch's record, so this shot may have been "
                          "submitted and billed. Check the provider's dashboard, then `wanbatch retry --yes` it if "
                          "it was not run");
      } catch (const Error& e) {
        spdlog::error("batch {}: cannot record it again: {}", r.manifest->batch, e.what());
      }
    }
  }

  // SIGHUP: the config file is read again. Settings the running loop reads live
  // take effect at once; the rest need a restart and are named in the log. A
  // file that does not load changes nothing.
  void reload() {
    Config fresh;
    try {
      fresh = load_config(c_.path);
    } catch (const Error& e) {
      spdlog::error("SIGHUP: the config was not reloaded, nothing changed: {}", e.what());
      return;
    }
    std::vector<std::string> applied, restart;
    auto live = [&](const char* key, auto& field, const auto& value) {
      if (field == value) return;
      field = value;
      applied.push_back(key);
    };
    auto later = [&](const char* key, bool same) {
      if (!same) restart.push_back(key);
    };
    if (fresh.log_level != c_.log_level) {
      spdlog::set_level(spdlog::level::from_str(fresh.log_level));
      c_.log_level = fresh.log_level;
      applied.push_back("log_level");
    }
    live("limits.max_in_flight", c_.limits.max_in_flight, fresh.limits.max_in_flight);
    live("limits.max_concurrent_uploads", c_.limits.max_concurrent_uploads, fresh.limits.max_concurrent_uploads);
    live("limits.max_concurrent_downloads", c_.limits.max_concurrent_downloads, fresh.limits.max_concurrent_downloads);
    live("limits.credit_reserve", c_.limits.credit_reserve, fresh.limits.credit_reserve);
    live("limits.daily_budget_credits", c_.limits.daily_budget_credits, fresh.limits.daily_budget_credits);
    live("poll.min_interval_seconds", c_.poll.min_interval_seconds, fresh.poll.min_interval_seconds);
    live("poll.max_interval_seconds", c_.poll.max_interval_seconds, fresh.poll.max_interval_seconds);
    live("poll.target_delay_fraction", c_.poll.target_delay_fraction, fresh.poll.target_delay_fraction);
    live("poll.prior_render_seconds", c_.poll.prior_render_seconds, fresh.poll.prior_render_seconds);
    live("poll.stuck_after_seconds", c_.poll.stuck_after_seconds, fresh.poll.stuck_after_seconds);
    live("limits.requests_per_minute", c_.limits.requests_per_minute, fresh.limits.requests_per_minute);
    live("limits.download_min_bytes_per_second", c_.limits.download_min_bytes_per_second,
         fresh.limits.download_min_bytes_per_second);
    live("limits.download_stall_seconds", c_.limits.download_stall_seconds, fresh.limits.download_stall_seconds);
    live("retry.max_attempts", c_.retry.max_attempts, fresh.retry.max_attempts);
    live("retry.base_delay_seconds", c_.retry.base_delay_seconds, fresh.retry.base_delay_seconds);
    live("retry.max_delay_seconds", c_.retry.max_delay_seconds, fresh.retry.max_delay_seconds);
    live("credits.check_interval_seconds", c_.credits.check_interval_seconds, fresh.credits.check_interval_seconds);
    live("on_expired", c_.on_expired, fresh.on_expired);
    live("video.ffprobe", c_.video.ffprobe, fresh.video.ffprobe);
    live("video.ffmpeg", c_.video.ffmpeg, fresh.video.ffmpeg);
    live("video.timeout_seconds", c_.video.timeout_seconds, fresh.video.timeout_seconds);
    live("notify", c_.notify, fresh.notify);
    live("contact_sheet.interval_seconds", c_.contact_sheet.interval_seconds, fresh.contact_sheet.interval_seconds);
    later("api", fresh.api.base_url == c_.api.base_url && fresh.api.storage_url == c_.api.storage_url &&
                     fresh.api.model == c_.api.model && fresh.api.key_env == c_.api.key_env &&
                     fresh.api.key_file == c_.api.key_file &&
                     fresh.api.allow_loopback_http == c_.api.allow_loopback_http &&
                     fresh.api.request_timeout_seconds == c_.api.request_timeout_seconds &&
                     fresh.api.connect_timeout_seconds == c_.api.connect_timeout_seconds);
    later("spool", fresh.spool.incoming == c_.spool.incoming && fresh.spool.active == c_.spool.active &&
                       fresh.spool.done == c_.spool.done && fresh.spool.failed == c_.spool.failed &&
                       fresh.spool.settle_seconds == c_.spool.settle_seconds);
    later("state_dir", fresh.state_dir == c_.state_dir);
    later("output_root", fresh.output_root == c_.output_root);
    later("input_roots", fresh.input_roots == c_.input_roots);
    later("limits.submits_per_minute", fresh.limits.submits_per_minute == c_.limits.submits_per_minute);
    later("limits.submit_window_seconds", fresh.limits.submit_window_seconds == c_.limits.submit_window_seconds);
    later("limits (sizes)", fresh.limits.max_shots_per_manifest == c_.limits.max_shots_per_manifest &&
                                fresh.limits.max_manifest_bytes == c_.limits.max_manifest_bytes &&
                                fresh.limits.max_media_bytes == c_.limits.max_media_bytes &&
                                fresh.limits.max_download_bytes == c_.limits.max_download_bytes);
    later("pricing", fresh.pricing.credits_per_second_720p == c_.pricing.credits_per_second_720p &&
                         fresh.pricing.credits_per_second_1080p == c_.pricing.credits_per_second_1080p);
    later("schedule.window", fresh.window == c_.window);
    later("metrics.listen", fresh.metrics_listen == c_.metrics_listen);
    auto join = [](const std::vector<std::string>& v) {
      std::string out;
      for (const auto& k : v) out += (out.empty() ? "" : ", ") + k;
      return out.empty() ? std::string("none") : out;
    };
    scheduler_.settings_changed();  // what the engine's parts keep of them (poll bounds, request budget)
    spdlog::info("SIGHUP: config {} reloaded; applied: {}; changed but needing a restart: {}", c_.path,
                 join(applied), join(restart));
  }

  // SIGUSR1: one line on what the daemon is doing, for an operator without the CLI.
  void log_status() {
    spdlog::info("status: {} unfinished batches, {} shots under way, {} submits on the wire{}",
                 scheduler_.unfinished_batches(), scheduler_.active_shots(), scheduler_.submits_on_the_wire(),
                 scheduler_.paused() ? ", submits PAUSED" : "");
  }

  // A manifest the watcher found ready in spool.incoming: claim it (rename it into
  // the claim folder), then read, record and move on that very file. A file
  // renamed over the name meanwhile is a new file in spool.incoming, taken in turn.
  void take(const std::string& name) {
    std::string claimed = join_path(claim_dir_, name);
    struct stat st {};
    if (::lstat(claimed.c_str(), &st) == 0) {
      // A claimed file of this name could not be moved on before. Only a start
      // takes leftovers again: here it might be another daemon's claim in progress.
      spdlog::error("{}: not taken: a manifest of that name is still in {} (taken again at the next start)", name,
                    claim_dir_);
      return;
    }
    std::string from = join_path(c_.spool.incoming, name);
    int rc = ::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, claimed.c_str(), RENAME_NOREPLACE);
    // A filesystem without RENAME_NOREPLACE (some network shares): the name was
    // just seen free, and only this daemon (the spool lock) writes the claim folder.
    if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) rc = ::rename(from.c_str(), claimed.c_str());
    if (rc != 0) {
      if (errno != ENOENT) spdlog::error("{}: cannot claim it into {}: {}", name, claim_dir_, std::strerror(errno));
      return;  // ENOENT: gone before it was taken
    }
    crash_point("claimed");
    take_claimed(name);
  }

  // Reads, records and moves on the claimed manifest `name` (in claim_dir_). Read
  // as if it were in spool.incoming: its relative media paths resolve there.
  void take_claimed(const std::string& name) {
    std::string path = join_path(claim_dir_, name);
    ManifestResult r = load_manifest(path, rules_, join_path(c_.spool.incoming, name));
    crash_point("manifest_read");
    if (!r.manifest) {
      refuse(name, format_problems(name, r.problems));
      return;
    }
    const Manifest& m = *r.manifest;
    std::string active = join_path(c_.spool.active, m.batch + "__" + name);
    Scheduler::Accept a;
    std::optional<BatchRecord> before = store_->batch(m.batch);  // a revision retires its last manifest
    try {
      LogScope log_scope(m.batch);
      a = scheduler_.accept(m, name, active);
    } catch (const Error& e) {
      spdlog::error("{}: cannot record the batch: {} (left in {}; taken again at the next start)", name, e.what(),
                    claim_dir_);
      return;
    }
    if (a == Scheduler::Accept::name_taken) {
      refuse(name, name + ":0: batch: batch '" + m.batch +
                       "' is a stand-in for a record the state store lost, and takes no revision; give this "
                       "manifest another batch: name\n");
      return;
    }
    if (a == Scheduler::Accept::unchanged || a == Scheduler::Accept::revised) {
      if (a == Scheduler::Accept::unchanged)
        spdlog::info("{}: a no-op revision of batch '{}': no render input changed, nothing to render; moved to {}",
                     name, m.batch, c_.spool.done);
      else if (before) retire_manifest(*before);
      auto now = store_->batch(m.batch);
      move_on(path, a == Scheduler::Accept::unchanged || (now && now->finished) ? unique_target(c_.spool.done, name)
                                                                                 : active);
      return;
    }
    if (a == Scheduler::Accept::already_added) {
      auto b = store_->batch(m.batch);
      struct stat st {};
      if (b && b->finished) {
        spdlog::warn("{}: a no-op revision: batch '{}' already finished from these same bytes and no input "
                     "changed; nothing to render, moved to {}. Change a shot to render it again "
                     "(`wanbatch plan` shows what would render; `wanbatch retry {}` re-runs its failed and HELD shots)",
                     name, m.batch, c_.spool.done, m.batch);
        move_on(path, unique_target(c_.spool.done, name));
        return;
      }
      if (b && ::lstat(b->manifest_path.c_str(), &st) == 0) {
        refuse(name, name + ":0: batch: batch '" + m.batch + "' is already running from these same bytes (" +
                         b->manifest_path + "); this copy changes nothing\n");
        return;
      }
      // Recorded, and the daemon stopped before the file was moved: move it now.
      if (b) active = b->manifest_path;
    }
    move_on(path, active);
  }

  // At start: manifests claimed before a stop are taken again, before any new one.
  void take_left_claims() {
    std::vector<std::string> names;
    if (DIR* d = ::opendir(claim_dir_.c_str())) {
      while (struct dirent* e = ::readdir(d))
        if (SpoolWatcher::eligible(e->d_name)) names.emplace_back(e->d_name);
      ::closedir(d);
    }
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      spdlog::info("{}: taking again, claimed before the last stop", name);
      take_claimed(name);
    }
  }

  void move_on(const std::string& from, const std::string& to) {
    try {
      move_file(from, to);
    } catch (const Error& e) {
      spdlog::error("{}: {} (left in {}; taken again at the next start)", basename_of(from), e.what(), claim_dir_);
    }
  }

  // One control request (daemon/control.h).
  nlohmann::json command(const nlohmann::json& request) {
    std::string cmd = request.value("command", "");
    try {
      if (cmd == "ping")  // `wanbatch status` shows the live cap and rate; `rehearse` takes the balance
        return {{"ok", true}, {"paused", scheduler_.paused()}, {"max_in_flight", c_.limits.max_in_flight},
                {"submits_per_minute", scheduler_.submit_rate_per_minute()},
                {"balance", scheduler_.balance() ? nlohmann::json(*scheduler_.balance()) : nlohmann::json(nullptr)},
                {"next_balance_read_seconds", static_cast<double>(scheduler_.next_balance_read_in().count()) / 1000.0}};
      if (cmd == "pause" || cmd == "resume") {
        scheduler_.set_paused(cmd == "pause");
        return {{"ok", true}, {"paused", scheduler_.paused()}};
      }
      if (cmd == "retry" || cmd == "cancel") {
        std::string target = request.value("target", "");
        bool yes = request.contains("yes") && request["yes"].is_boolean() && request["yes"].get<bool>();
        bool abandon = request.contains("abandon") && request["abandon"].is_boolean() && request["abandon"].get<bool>();
        auto r = cmd == "retry" ? scheduler_.retry(target, yes ? Scheduler::Resubmit::yes : Scheduler::Resubmit::no)
                                : scheduler_.cancel(target, abandon);
        return {{"ok", true}, {"changed", r.changed}, {"skipped", r.skipped}, {"plan", r.plan}, {"kept_paid", r.kept_paid}};
      }
      if (cmd == "adopt") {
        auto r = scheduler_.adopt(request.value("target", ""), request.value("request_id", ""));
        return {{"ok", true}, {"changed", r.changed}, {"skipped", r.skipped}, {"plan", r.plan}};
      }
      return {{"ok", false}, {"error", "unknown command '" + cmd + "'"}};
    } catch (const Error& e) {
      return {{"ok", false}, {"error", e.what()}};
    }
  }

  // Moves the claimed manifest `name` to spool.failed with its errors beside it.
  void refuse(const std::string& name, const std::string& errors) {
    spdlog::warn("{}: refused:\n{}", name, errors);
    try {
      std::string target = unique_target(c_.spool.failed, name);
      write_file_atomic(c_.spool.failed, basename_of(target) + ".error.txt", errors);
      move_file(join_path(claim_dir_, name), target);
    } catch (const Error& e) {
      spdlog::error("{}: cannot move to {}: {}", name, c_.spool.failed, e.what());
    }
  }

  void retire_manifest(const BatchRecord& b) {
    struct stat st {};
    if (b.manifest_path.empty() || ::lstat(b.manifest_path.c_str(), &st) != 0) return;
    try {
      move_file(b.manifest_path, unique_target(c_.spool.done, b.manifest_name));
    } catch (const Error& e) {
      spdlog::error("batch {}: {}", b.name, e.what());
    }
  }

  Config& c_;  // live: SIGHUP reloads what can change while running
  FileLock& spool_lock_;
  bool spool_lost_ = false;
  std::chrono::steady_clock::time_point last_error_log_{};
  CurlTransport transport_;
  std::unique_ptr<Store> store_;
  Scheduler scheduler_;
  DaemonMetrics metrics_;
  ContactSheets sheets_{c_, *store_};
  Notifier notifier_{c_, *store_, transport_, [] { return to_epoch_ms(std::chrono::system_clock::now()); },
                     [this](const std::string& batch) { return batch_progress(scheduler_, batch); }};
  SpoolWatcher watcher_;
  ControlServer control_;
  int signal_fd_;
  ManifestRules rules_;
  std::string claim_dir_;
};

}  // namespace

std::string load_api_key(const ApiConfig& api) {
  std::string key;
  if (!api.key_env.empty()) {
    if (char* v = std::getenv(api.key_env.c_str()); v && *v) {
      key = trim(v);
      // Scrub the value in place: /proc/<pid>/environ shows the original block,
      // which unsetenv alone leaves untouched.
      std::fill(v, v + std::strlen(v), 'x');
    }
    ::unsetenv(api.key_env.c_str());
  }
  if (key.empty() && !api.key_file.empty()) key = read_key_file(api.key_file);
  if (key.empty()) {
    if (const char* creds = std::getenv("CREDENTIALS_DIRECTORY"); creds && *creds) {
      std::string path = join_path(creds, "segmind-api-key");
      struct stat st {};
      if (::stat(path.c_str(), &st) == 0) key = read_key_file(path);
    }
  }
  if (key.empty())
    throw Error("no API key: set $" + api.key_env + ", api.key_file, or a systemd credential named segmind-api-key");
  return key;
}

int run_daemon(const Config& config_at_start) {
  ::prctl(PR_SET_DUMPABLE, 0);
  if (!helpers_read_passed_fds()) {
    // ffprobe and ffmpeg are handed the files they read and write as descriptors, opened
    // by their /proc/self/fd names, and local media are checked by their resolved paths.
    spdlog::error("/proc is not mounted (or /proc/self/fd cannot be read): wanbatch needs it to hand ffprobe and "
                  "ffmpeg the files they read and write, and to check local media; mount it and start again");
    return 1;
  }
  Config config = config_at_start;  // SIGHUP changes this copy
  std::string key;
  try {
    key = load_api_key(config.api);
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  sigset_t mask;
  sigemptyset(&mask);
  // Every signal whose default would end the process without a drain is read
  // from the signalfd instead: TERM and INT drain and stop, HUP reloads, USR1
  // logs a status line, USR2 is logged and ignored (docs/OPERATIONS.md).
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&mask, sig);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGXFSZ, SIG_IGN);  // a file size limit is an EFBIG write error, not a kill
  int sfd = ::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  ::signal(SIGPIPE, SIG_IGN);
  if (!wait_for_folders(config, sfd)) return 0;
  try {
    FileLock state_lock = lock_state_dir(config.state_dir);
    FileLock spool_lock = lock_spool(config.spool.incoming, config.state_dir);
    Daemon d(config, std::move(key), sfd, spool_lock);
    return d.run();
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}

}  // namespace wb
