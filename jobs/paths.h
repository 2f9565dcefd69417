// Confinement of local media to the configured input roots. A manifest names
// files; these functions decide whether wanbatch may read them and read them
// without following a link out of the roots, blocking on a FIFO or touching a
// device. The check runs again at read time, on the opened descriptor.
#pragma once

#include <string>
#include <vector>

namespace wb {

enum class MediaKind { image, audio };

struct MediaFile {
  std::string path;  // canonical
  std::string data;
  std::string mime;
  std::string sha256;
};

// Joins `raw` to `base_dir` when relative and normalises "." and ".." lexically.
std::string absolute_lexical(const std::string& raw, const std::string& base_dir);

// True when canonical `path` equals or lies below one of the canonical `roots`.
bool inside_roots(const std::string& path, const std::vector<std::string>& roots);

// Opens, checks and reads a media file. Throws wb::Error with a message for a
// person: outside the roots, not a regular file, hard-linked, too large, or not
// an image/audio file by its content.
MediaFile read_media(const std::string& path, const std::vector<std::string>& roots,
                     long long max_bytes, MediaKind kind);

// The MIME type of `data` by its leading bytes, or "" when not a supported type.
std::string sniff_mime(std::string_view data, MediaKind kind);

}  // namespace wb
