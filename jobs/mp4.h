// A structural check of a downloaded video: the top-level ISO BMFF boxes tile
// the file exactly, ftyp comes first, moov and mdat are present, and moov holds
// a video track (and reports whether it holds an audio track).
#pragma once

#include <string>

namespace wb {

struct Mp4Check {
  bool ok = false;
  bool has_video = false;
  bool has_audio = false;
  std::string error;  // when !ok
};

Mp4Check check_mp4_fd(int fd);
Mp4Check check_mp4_file(const std::string& path);
Mp4Check check_mp4_bytes(const std::string& data);

}  // namespace wb
