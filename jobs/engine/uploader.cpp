#include "jobs/engine/uploader.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include "jobs/crash_point.h"
#include "jobs/paths.h"
#include "jobs/segmind.h"

namespace wb {

bool Uploader::ready(Shot& shot) {
  struct Field {
    const MediaRef& ref;
    std::string& url;
    MediaKind kind;
  };
  Field fields[] = {{shot.spec.image, shot.image_url, MediaKind::image},
                    {shot.spec.last_frame, shot.last_frame_url, MediaKind::image},
                    {shot.spec.audio, shot.audio_url, MediaKind::audio}};
  const auto& limits = core_.settings.limits;
  // Every path below that leaves a field without its URL returns false.
  for (auto& f : fields) {
    if (!f.url.empty()) continue;
    // A frame of another shot (a chain) is the PNG the chains part took, under frames_dir.
    const std::string path = f.ref.is_frame() && frame_file ? frame_file(shot, f.ref) : f.ref.path;
    if (f.ref.is_frame() && path.empty()) return false;
    if (path.empty()) continue;
    std::vector<std::string> frame_root;
    if (f.ref.is_frame()) frame_root = {core_.settings.frames_dir};
    const std::vector<std::string>& roots = f.ref.is_frame() ? frame_root : core_.settings.input_roots;
    struct stat st {};
    bool seen = ::stat(path.c_str(), &st) == 0;
    int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    if (seen) {
      auto it = hash_cache_.find(path);
      if (it != hash_cache_.end() && it->second.size == st.st_size && it->second.mtime_ns == mtime) {
        if (auto url = core_.store.asset_url(it->second.sha256)) {
          f.url = *url;
          core_.save(shot);
          continue;
        }
        if (uploading_.count(it->second.sha256)) return false;  // another shot uploads it
      }
    }
    if (on_wire_ >= limits.max_concurrent_uploads) return false;
    if (!core_.budget.try_take(core_.mono(), RequestBudget::Use::submit)) return false;
    MediaFile file;
    try {
      file = read_media(path, roots, limits.max_media_bytes, f.kind);
    } catch (const Error& e) {
      if (f.ref.is_frame())  // ours, not the manifest's: tried again after a backoff, then HELD
        core_.retry_later(shot, std::string("the frame taken from ") + f.ref.shot + ": " + e.what(), true);
      else
        core_.end(shot, ShotState::rejected, std::string("local media: ") + e.what());
      return false;
    }
    hash_cache_[path] = {static_cast<long long>(file.data.size()), mtime, file.sha256};
    if (auto url = core_.store.asset_url(file.sha256)) {
      f.url = *url;
      core_.save(shot);
      continue;
    }
    std::string sha = file.sha256;
    uploading_.insert(sha);
    ++on_wire_;
    std::string key = shot.key();
    spdlog::info("{}: uploading {} ({} bytes)", key, path, file.data.size());
    core_.send(key, "upload", core_.api.make(core_.settings.api.storage_url, upload_body(file.mime, file.data)),
               [this, key, sha, path, frame = f.ref.is_frame()](const HttpResponse& r) {
                 --on_wire_;
                 uploading_.erase(sha);
                 UploadAnswer a = classify_upload(r);
                 Shot* s = core_.book.find(key);
                 if (a.verdict == Verdict::ok) {
                   core_.store.put_asset(sha, a.url);
                   if (frame) crash_point("frame_uploaded");
                   if (s && core_.step_went_through(*s)) core_.save(*s);
                   spdlog::info("{}: uploaded {}", key, path);
                   return;
                 }
                 if (!s) return;
                 if (a.verdict == Verdict::rejected || a.verdict == Verdict::bug)
                   core_.end(*s, ShotState::held, "upload of " + path + " refused: " + a.message);
                 else
                   core_.retry_later(*s, "upload of " + path + ": " + a.message, true);
               });
    return false;
  }
  return true;
}

}  // namespace wb
