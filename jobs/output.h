// Files wanbatch writes for people under output_root: <batch>/<shot>.mp4, its
// sidecar <shot>.json and the batch's report.json. Names come from validated ids
// only; every file is written under a temporary name and renamed, and nothing is
// ever written through a symlink.
#pragma once

#include <string>

namespace wb {

class OutputDir {
 public:
  explicit OutputDir(std::string root) : root_(std::move(root)) {}

  // The batch folder, created when missing. Throws wb::Error (root missing,
  // a symlink in place of the folder, permissions).
  std::string batch_dir(const std::string& batch) const;

  // Opens <batch>/.<shot>.mp4.part for writing. Truncated, unless `resume`:
  // then positioned at its end, with its size in `offset`. Returns the fd.
  int open_part(const std::string& batch, const std::string& shot, bool resume, long long& offset) const;

  // fsyncs the part file, renames it to <shot>.mp4 and syncs the folder.
  // Returns the final path.
  std::string commit_part(const std::string& batch, const std::string& shot, int fd) const;

  void discard_part(const std::string& batch, const std::string& shot) const;

  // Writes <batch>/<name> atomically.
  std::string write(const std::string& batch, const std::string& name, const std::string& data) const;

  const std::string& root() const { return root_; }

 private:
  std::string root_;
};

}  // namespace wb
