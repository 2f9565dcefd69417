#include "jobs/engine/downloader.h"

#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "jobs/crash_point.h"
#include "jobs/mp4.h"
#include "jobs/report.h"
#include "jobs/segmind.h"
#include "jobs/takes.h"
#include "jobs/video_probe.h"

namespace wb {

PartStamp stamp_of(const struct stat& st) {
  auto ns = [](const timespec& t) { return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec; };
  return {static_cast<int64_t>(st.st_dev), static_cast<int64_t>(st.st_ino), static_cast<int64_t>(st.st_size),
          ns(st.st_mtim), ns(st.st_ctim)};
}

namespace {
// The size a download's deadline assumes when the server announces none (a
// Wan 2.7 video is tens of MB): at 16 KiB/s, about four and a half hours.
constexpr long long kUnannouncedDownloadBytes = 256ll << 20;
// The reason a shot carries after its first download did not decode.
constexpr const char* kDoesNotDecode = "the downloaded video does not decode";
// The due time of a shot whose video is being probed: never, until the probe answers.
constexpr int64_t kParked = std::numeric_limits<int64_t>::max() / 4;
}  // namespace

void Downloader::due(Shot& shot) {
  if (probing_.count(shot.key())) return;  // its probe answers first
  if (on_wire_ < core_.settings.limits.max_concurrent_downloads && waiting_.empty()) {
    start(shot);
    return;
  }
  if (waiting_set_.insert(shot.key()).second) waiting_.push_back(shot.key());
}

void Downloader::start_waiting() {
  while (on_wire_ < core_.settings.limits.max_concurrent_downloads && !waiting_.empty()) {
    std::string key = waiting_.front();
    waiting_.pop_front();
    waiting_set_.erase(key);
    Shot* s = core_.book.find(key);
    if (s && s->state == ShotState::downloading && !core_.book.busy(key)) start(*s);
  }
}

void Downloader::start(Shot& shot) {
  int fd = -1;
  long long offset = 0;
  try {
    // A directory where the video is written needs a person (anything else there is
    // removed); so does anything but a file at <shot>.mp4 or <shot>.json. Looked at
    // first: the withdraw below would remove a FIFO or a symlink at <shot>.mp4.
    if (std::string stray = output_.foreign_part(shot.batch, shot.spec.id); !stray.empty()) {
      core_.end(shot, ShotState::held,
                stray + " is not a regular file: remove it, then `wanbatch retry " + shot.key() + "` (no new submit)");
      return;
    }
    // A shot that downloads is not DONE: a video a commit left visible (a crash
    // before its record said DONE) is taken back before it is fetched again.
    output_.withdraw(shot.batch, shot.spec.id, shot.request_id, shot.file_take > 0 && shot.file_take != shot.take);
    // A download cut short, or whose commit waited for the disk, goes on from its
    // .part with a Range request, but only while the .part is the very file this
    // daemon left (its stamp): one swapped or edited meanwhile would be spliced
    // into the video or, as long as the video, taken for it. After a restart
    // nothing is known of it: the download starts over (bandwidth, never money).
    const bool resume = shot.part_stamp != PartStamp{};
    fd = output_.open_part(shot.batch, shot.spec.id, resume, offset);
    if (offset > 0) {
      struct stat st {};
      if (::fstat(fd, &st) != 0 || stamp_of(st) != shot.part_stamp) {
        ::close(fd);
        fd = -1;
        spdlog::warn("{}: its .part is not the file this daemon left: downloading the video from the start", shot.key());
        fd = output_.open_part(shot.batch, shot.spec.id, false, offset);
      }
    }
    shot.part_stamp = PartStamp{};
  } catch (const Error& e) {
    // The output share is missing or unwritable: wait, never lose the shot.
    if (fd >= 0) ::close(fd);
    shot.part_stamp = PartStamp{};
    wait_for_disk(shot, e.what());
    return;
  }
  HttpRequest req;
  crash_point("download_start");
  const auto& limits = core_.settings.limits;
  req.url = shot.output_url;
  req.sink_fd = fd;
  req.resume_from = offset;
  req.max_body_bytes = limits.max_download_bytes - offset;
  req.max_redirects = 5;
  req.timeout = Millis(0);
  req.connect_timeout = Millis(static_cast<int64_t>(core_.settings.api.connect_timeout_seconds * 1000));
  // A trickle must not hold a download slot forever: a speed floor, and a
  // deadline scaled to the announced size (else to kUnannouncedDownloadBytes).
  req.min_bytes_per_second = limits.download_min_bytes_per_second;
  req.stall_time = Millis(static_cast<int64_t>(limits.download_stall_seconds) * 1000);
  req.deadline_expected_bytes = std::min(req.max_body_bytes, kUnannouncedDownloadBytes);
  std::string key = shot.key();
  ++on_wire_;
  core_.send(key, "download", std::move(req), [this, key, fd, offset](const HttpResponse& r) {
    --on_wire_;
    Fd closer(fd);  // also when the answer's store write throws
    on_answer(key, fd, offset, r);
  });
}

void Downloader::wait_for_disk(Shot& shot, const std::string& why) {
  std::string reason = "waiting: cannot write the video: " + why;
  if (reason != shot.reason) {
    shot.reason = std::move(reason);
    core_.save(shot);  // `status` shows why it waits
  }
  // Not a failed attempt either: a disk-full spell must not spend the retries of
  // the checks that come after it.
  core_.book.set_due(shot, mono_ms(core_.mono() + std::min(core_.backoff(shot.waits++), Millis(60000))));
  spdlog::warn("{}: {} (will retry)", shot.key(), shot.reason);
}

void Downloader::on_answer(const std::string& key, int fd, long long offset, const HttpResponse& r) {
  Shot* shot = core_.book.find(key);
  if (!shot) return;
  const MonoPoint now = core_.mono();
  if (r.error == NetError::local_write) {
    output_.discard_part(shot->batch, shot->spec.id);
    wait_for_disk(*shot, r.error_text);
    return;
  }
  // A resume from a .part that already holds the whole video (its commit waited
  // for the disk, or the transfer was cut after its last byte): the server has
  // nothing left to send and says so, 416 with the video's length. The part is
  // checked like any download; a 416 naming another length starts over.
  const bool whole_part = offset > 0 && r.error == NetError::none && r.status == 416 &&
                          unsatisfied_range_length(r.header("content-range")) == offset;
  bool complete = whole_part || (r.error == NetError::none && (r.status == 200 || (r.status == 206 && r.body_bytes > 0)));
  if (!complete) {
    // A transfer cut short keeps its .part for a Range resume (stamped as it is
    // left); anything else starts over.
    bool resumable = r.error == NetError::unknown_outcome || r.error == NetError::not_sent;
    struct stat st {};
    if (resumable && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1) shot->part_stamp = stamp_of(st);
    else output_.discard_part(shot->batch, shot->spec.id);
    if (r.error == NetError::none && (r.status == 403 || r.status == 404 || r.status == 410) &&
        shot->attempts + 1 < core_.settings.retry.max_attempts) {
      // The output URL has gone: ask for the result again (it may carry a fresh URL).
      // The count goes on through that fetch: a URL gone every time ends HELD.
      ++shot->attempts;
      shot->reason = Core::retrying("download: " + error_message(r) + "; fetching the result again for its URL");
      shot->due_ms = mono_ms(now + core_.backoff(shot->attempts - 1));
      core_.move(*shot, ShotState::fetching);
      core_.save(*shot);
      return;
    }
    core_.retry_later(*shot, "download: " + error_message(r), true);
    return;
  }
  Mp4Check check = check_mp4_fd(fd);
  if (!check.ok) {
    output_.discard_part(shot->batch, shot->spec.id);
    core_.retry_later(*shot, "downloaded file is not a valid MP4: " + check.error, true);
    return;
  }
  // Decoded for real before it may be DONE. The probe (tens of ms, up to
  // video.timeout_seconds) runs beside the loop; the shot is parked until its
  // answer comes back to the loop's thread (finish()). No descriptor is kept
  // meanwhile: when the probes fall behind the downloads, thousands of videos
  // wait, and each held descriptor would count against the daemon's open-file
  // limit and be copied into every helper process started.
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    core_.retry_later(*shot, std::string("cannot check the video: fstat: ") + std::strerror(errno), true);
    return;
  }
  if (st.st_nlink != 1) {
    // Another name was linked to it: whoever holds that name could rewrite the
    // video after its SHA-256 is recorded. Downloaded again into a file of its own.
    output_.discard_part(shot->batch, shot->spec.id);
    core_.retry_later(*shot, "the downloaded video has another name (a hard link)", true);
    return;
  }
  const PartId probed{st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim};
  shot->due_ms = kParked;
  probing_.insert(key);
  const bool has_audio = check.has_audio;
  // The contact sheet's poster frame is taken here too, beside the loop. The
  // worker opens the file once more and the helpers are passed that descriptor
  // (jobs/subprocess.h, pass_fds), so that they only ever read the file checked
  // here: a FIFO, a device or another file put at the name meanwhile is never
  // handed to ffprobe or ffmpeg (a FIFO would hold a worker until
  // video.timeout_seconds).
  core_.background.run([this, key, request_id = shot->request_id, probed, has_audio, video = core_.settings.video,
                        probe = core_.probe,
                        part = output_.part_path(shot->batch, shot->spec.id),
                        poster = output_.poster_part_path(shot->batch, shot->spec.id)]() -> Background::Done {
    VideoFacts facts;
    std::string poster_problem;
    Fd opened(::open(part.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    struct stat st {};
    if (opened.get() < 0 || ::fstat(opened.get(), &st) != 0 || !probed.is(st)) {
      // finish() looks at the name again and says what it found there.
      facts.problem = "the downloaded video changed before it was checked";
    } else {
      // A probe that throws (a read error while a stand-in hashes the file) is a
      // check not made: the shot must come back to the loop, never stay parked.
      try {
        const VideoFile held(part, opened.get());
        facts = probe(video, held);
        if (facts.checked && facts.decodes) poster_problem = make_poster(video, held, facts.duration_seconds, poster);
      } catch (const std::exception& e) {
        facts = VideoFacts{};
        facts.problem = e.what();
      }
    }
    return [this, key, request_id, probed, has_audio, facts, poster_problem] {
      if (!poster_problem.empty()) spdlog::warn("{}: no poster frame for the contact sheet: {}", key, poster_problem);
      finish(key, request_id, probed, has_audio, facts);
    };
  });
}

bool Downloader::PartId::is(const struct stat& st) const {
  auto same_time = [](const timespec& a, const timespec& b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; };
  return S_ISREG(st.st_mode) && st.st_dev == dev && st.st_ino == ino && st.st_size == size &&
         same_time(st.st_mtim, mtime) && same_time(st.st_ctim, ctime);
}

void Downloader::finish(const std::string& key, const std::string& request_id, const PartId& probed, bool has_audio,
                        const VideoFacts& facts) {
  probing_.erase(key);
  Shot* shot = core_.book.find(key);
  if (!shot || shot->state != ShotState::downloading) return;  // cancelled while it was probed
  if (shot->request_id != request_id) {
    // The take that was probed was cancelled meanwhile, and a new take of the shot
    // downloads now: nothing of the old check is its, and its download, which
    // waited for this answer, is due.
    core_.book.set_due(*shot, core_.now_ms());
    return;
  }
  // The file the probe checked, opened again by its path: hashed, synced and
  // renamed only if it is still that file, as long as it was.
  const std::string part = output_.part_path(shot->batch, shot->spec.id);
  Fd opened(::open(part.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));  // a FIFO must not block the loop
  const int fd = opened.get();
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0 || !probed.is(st)) {
    const std::string why = fd < 0 ? std::string(std::strerror(errno)) : std::string("replaced or changed");
    output_.discard_part(shot->batch, shot->spec.id);
    core_.retry_later(*shot, "the downloaded video changed while it was checked (" + why + ")", true);
    return;
  }
  const MonoPoint now = core_.mono();
  // A video that does not decode is downloaded once more, then HELD.
  if (!facts.checked) {
    output_.discard_part(shot->batch, shot->spec.id);
    core_.retry_later(*shot, "cannot check the video: " + facts.problem, true);
    return;
  }
  if (!facts.decodes) {
    output_.discard_part(shot->batch, shot->spec.id);
    std::string why = std::string(kDoesNotDecode) + ": " + facts.problem;
    if (shot->reason.rfind(kDoesNotDecode, 0) == 0) {
      core_.end(*shot, ShotState::held, why + " (downloaded twice)");
      return;
    }
    shot->reason = why + "; downloading it again";
    ++shot->attempts;
    core_.save(*shot);
    core_.book.set_due(*shot, mono_ms(now + core_.backoff(0)));
    spdlog::warn("{}: {}", key, shot->reason);
    return;
  }
  std::vector<std::string> differences = video_differences(shot->spec, facts);
  shot->video_json = video_facts_json(facts, differences);
  if (!differences.empty()) spdlog::warn("{}: the video differs from what was asked: {}", key, differences.front());
  // A video that cannot be read to its end is a check not made (downloaded again,
  // then HELD), not a disk to wait for: waiting downloaded it again for ever.
  std::string sha256;
  try {
    sha256 = core_.hash(fd);
  } catch (const Error& e) {
    output_.discard_part(shot->batch, shot->spec.id);
    core_.retry_later(*shot, std::string("cannot check the video: ") + e.what(), true);
    return;
  }
  try {
    VideoInfo video{static_cast<long long>(st.st_size), sha256, has_audio, shot->video_json};
    // An earlier DONE take keeps its files under its take name first (jobs/takes.h).
    if (shot->file_take > 0 && shot->file_take != shot->take) keep_take(output_, shot->batch, shot->spec.id, shot->file_take);
    crash_point("take_kept");
    shot->file = output_.commit_shot(shot->batch, shot->spec.id, fd,
                                     sidecar_json(*shot, video, to_epoch_ms(core_.wall())));
    shot->file_take = shot->take;
  } catch (const Error& e) {
    shot->file.clear();
    // The checked video stays as its .part, stamped as it is now (the commit may
    // have renamed it and back): the next try asks for the rest of it, gets 416
    // with its length, and checks it again.
    struct stat now {};
    if (::fstat(fd, &now) == 0 && S_ISREG(now.st_mode)) shot->part_stamp = stamp_of(now);
    wait_for_disk(*shot, e.what());
    return;
  }
  // Its poster with it (the contact sheet shows DONE shots' posters only).
  if (std::string problem = output_.commit_poster(shot->batch, shot->spec.id); !problem.empty())
    spdlog::warn("{}: no poster frame for the contact sheet: {}", key, problem);
  crash_point("renamed");  // visible, not yet DONE: the next download start or a cancel takes it back
  try {
    core_.end(*shot, ShotState::done, "");
  } catch (...) {
    // The record did not take DONE (a full state disk): nothing of it stays visible.
    output_.withdraw(shot->batch, shot->spec.id, shot->request_id, false);
    throw;
  }
  crash_point("done");
}

}  // namespace wb
