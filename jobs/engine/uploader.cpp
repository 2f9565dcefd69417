#include "jobs/engine/uploader.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

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
    if (f.ref.path.empty() || !f.url.empty()) continue;
    struct stat st {};
    bool seen = ::stat(f.ref.path.c_str(), &st) == 0;
    int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    if (seen) {
      auto it = hash_cache_.find(f.ref.path);
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
      file = read_media(f.ref.path, core_.settings.input_roots, limits.max_media_bytes, f.kind);
    } catch (const Error& e) {
      core_.end(shot, ShotState::rejected, std::string("local media: ") + e.what());
      return false;
    }
    hash_cache_[f.ref.path] = {static_cast<long long>(file.data.size()), mtime, file.sha256};
    if (auto url = core_.store.asset_url(file.sha256)) {
      f.url = *url;
      core_.save(shot);
      continue;
    }
    std::string sha = file.sha256;
    uploading_.insert(sha);
    ++on_wire_;
    std::string key = shot.key();
    std::string path = f.ref.path;
    spdlog::info("{}: uploading {} ({} bytes)", key, path, file.data.size());
    core_.send(key, "upload", core_.api.make(core_.settings.api.storage_url, upload_body(file.mime, file.data)),
               [this, key, sha, path](const HttpResponse& r) {
                 --on_wire_;
                 uploading_.erase(sha);
                 UploadAnswer a = classify_upload(r);
                 Shot* s = core_.book.find(key);
                 if (a.verdict == Verdict::ok) {
                   core_.store.put_asset(sha, a.url);
                   if (s) s->attempts = 0;
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
