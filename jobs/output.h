// Files wanbatch writes for people under output_root: <batch>/<shot>.mp4, its
// sidecar <shot>.json and the batch's report.json. Names come from validated ids
// only; every file is written under a temporary name and renamed, and nothing is
// ever written through a symlink.
//
// Batch files and shot files share the batch folder but never a name: a shot id
// whose <id>.mp4 or <id>.json would be a batch file (compared without case, for
// case-insensitive shares) is refused by manifest validation, and the writers
// below refuse it again.
#pragma once

#include <string>
#include <vector>

namespace wb {

// The names of the files a batch folder holds for the batch as a whole.
const std::vector<std::string>& batch_file_names();
bool is_batch_file(const std::string& name);
// Why `id` cannot name a shot's files (they would be a batch file), or "".
std::string shot_id_clash(const std::string& id);

class OutputDir {
 public:
  explicit OutputDir(std::string root) : root_(std::move(root)) {}

  // The batch folder, created when missing. Throws wb::Error (root missing,
  // a symlink in place of the folder, permissions).
  std::string batch_dir(const std::string& batch) const;

  // The shot functions throw wb::Error for an invalid or clashing shot id.
  // Opens <batch>/.<shot>.mp4.part for writing. Truncated, unless `resume`:
  // then positioned at its end, with its size in `offset`. Returns the fd. An
  // empty part starts a download: a poster staged by another is removed.
  int open_part(const std::string& batch, const std::string& shot, bool resume, long long& offset) const;

  // fsyncs the part file, renames it to <shot>.mp4 and syncs the folder.
  // Returns the final path.
  std::string commit_part(const std::string& batch, const std::string& shot, int fd) const;

  // A shot's video and its sidecar made visible together, so that a full
  // disk never leaves a <shot>.mp4 without its <shot>.json: the sidecar is
  // written and synced under a temporary name first (a full disk fails here,
  // with nothing shown), then the part is synced and renamed to <shot>.mp4,
  // then the sidecar to <shot>.json, and the folder synced; a failure after
  // the video's rename takes the video back to its part. Returns the video's
  // path. The caller records the shot DONE after it, and withdraw()s on failure.
  std::string commit_shot(const std::string& batch, const std::string& shot, int fd, const std::string& sidecar) const;

  // Takes back what a commit made visible for a shot that is not DONE (its
  // record could not be written, it was cancelled, or a crash came between the
  // commit and the record): <shot>.mp4 and <shot>.json are removed when the
  // sidecar names `request_id` (this take's job), or when there is no sidecar
  // and no earlier take is DONE; so is its <shot>.jpg, which a commit made with
  // them. Files of an earlier DONE take are never touched:
  // while a new take renders, <shot>.mp4 is still the last DONE one.
  void withdraw(const std::string& batch, const std::string& shot, const std::string& request_id,
                bool earlier_take_done) const;

  // The path of <batch>/.<shot>.mp4.part (for a checker that reads it by name).
  std::string part_path(const std::string& batch, const std::string& shot) const;
  // Something other than a regular file at a name the shot's download writes for
  // itself (.part, staged poster, sidecar's temporary) is removed (a FIFO, a
  // symlink...); returns its path when it could not be (a directory), or when
  // <shot>.mp4 or <shot>.json, which its commit replaces, is not a regular file
  // (left as it is: someone put it there); else "".
  std::string foreign_part(const std::string& batch, const std::string& shot) const;

  // Removes the .part and the poster staged beside it.
  void discard_part(const std::string& batch, const std::string& shot) const;

  // The poster frame (contact sheet) of the video being checked is written to
  // <batch>/.<shot>.jpg.part, and becomes <shot>.jpg only with its video
  // (commit_poster): no <shot>.jpg is shown for a video that did not become DONE.
  std::string poster_part_path(const std::string& batch, const std::string& shot) const;
  // After commit_shot: the staged poster is renamed to <shot>.jpg; without one
  // (ffmpeg failed), an earlier take's <shot>.jpg is removed, as it shows
  // another video. Returns "" or what went wrong (the video stays DONE).
  std::string commit_poster(const std::string& batch, const std::string& shot) const;

  // Writes the batch file <batch>/<name> (one of batch_file_names()) atomically.
  std::string write(const std::string& batch, const std::string& name, const std::string& data) const;
  std::string write(const std::string& batch, const std::string& name, const std::vector<std::string>& pieces) const;

  // Writes the shot's sidecar <batch>/<shot>.json atomically.
  std::string write_sidecar(const std::string& batch, const std::string& shot, const std::string& data) const;

  const std::string& root() const { return root_; }

 private:
  std::string root_;
};

}  // namespace wb
