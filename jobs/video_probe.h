// A downloaded video checked for real: ffprobe (jobs/subprocess.h: no shell,
// bounded in time and output) decodes the first seconds of it, and what it
// finds is compared with what the shot asked for. The structural box check
// (jobs/mp4.h) runs first; this one proves the streams decode.
#pragma once

#include <string>
#include <vector>

#include "jobs/manifest.h"
#include "jobs/settings.h"

namespace wb {

struct VideoFacts {
  // The helper ran and said something we could read; false: the check itself
  // could not be made (no ffprobe, a timeout), which says nothing of the video.
  bool checked = false;
  bool decodes = false;  // a video and an audio stream, each with frames decoded
  std::string problem;   // why it was not checked, or why it does not decode
  double duration_seconds = 0;
  int width = 0, height = 0;
  bool has_video = false, has_audio = false;
  std::string video_codec, audio_codec;
};

// Reads ffprobe's JSON (-show_entries format=duration:stream=... -count_frames).
VideoFacts parse_ffprobe_json(const std::string& text);

// A video a helper reads: by its path, or, when `fd` is open on it, through
// that descriptor (the file checked, whatever is at the path by then; the
// path then only names it in messages).
struct VideoFile {
  VideoFile(std::string p, int f = -1) : path(std::move(p)), fd(f) {}
  VideoFile(const char* p) : path(p) {}
  std::string path;
  int fd = -1;
};

// Runs ffprobe on the video.
VideoFacts probe_video(const VideoConfig& config, const VideoFile& video);

// What differs from what was asked, one sentence each ("" when none):
// the duration (off by more than half a second) and the resolution (the
// short side against 720P / 1080P).
std::vector<std::string> video_differences(const ShotSpec& asked, const VideoFacts& got);

// The facts as the JSON object sidecars, reports and the contact sheet show:
// {duration_seconds, width, height, video_codec, audio_codec, has_audio, differences}.
std::string video_facts_json(const VideoFacts& facts, const std::vector<std::string>& differences);

// Takes one frame of `video` (at about a third of `duration_seconds`) as a
// JPEG at `jpeg_path`, at most 640 pixels wide, with ffmpeg. "" or the problem.
// ffmpeg writes a file created here (jobs/subprocess.h, HelperOutput), renamed
// into place: a symlink put at the temporary name is never written through.
std::string make_poster(const VideoConfig& config, const VideoFile& video, double duration_seconds,
                        const std::string& jpeg_path);

}  // namespace wb
