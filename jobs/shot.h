// A shot's persisted record and its state machine vocabulary (DESIGN.md, State).
#pragma once

#include <cstdint>

#include <array>
#include <map>
#include <optional>
#include <vector>
#include <string>

#include "jobs/manifest.h"

namespace wb {

enum class ShotState {
  pending,      // waiting for uploads, a slot or a retry time
  submitting,   // a POST may be on the wire; synced to disk before it is sent
  in_flight,    // the provider has it (QUEUED or PROCESSING); we poll
  fetching,     // COMPLETED; fetching the result once
  downloading,  // fetching the video into the output folder
  done,
  failed,     // the provider's verdict (422 / FAILED)
  rejected,   // 400-class: bad parameters
  cancelled,
  held,  // needs a person: ambiguous submit, expired record, retired model...
};

const char* to_string(ShotState s);
std::optional<ShotState> shot_state_from(const std::string& s);
bool is_terminal(ShotState s);
// Submitted and not yet ended (its estimate is committed until its cost is known).
bool occupies_slot(ShotState s);
// The provider is working on it (a submit on the wire, QUEUED or PROCESSING):
// counts against limits.max_in_flight. A COMPLETED job being fetched and
// downloaded frees its slot, so the next submit need not wait for the download.
bool at_provider(ShotState s);

using PartStamp = std::array<int64_t, 5>;

struct Shot {
  std::string batch;
  int index = 0;  // position in the manifest
  ShotSpec spec;
  ShotState state = ShotState::pending;
  std::string reason;  // why it is held, failed, rejected or waiting
  // Public URLs of uploaded local media, by field ("image", "last_frame", "audio_url").
  std::string image_url, last_frame_url, audio_url;
  std::string request_id;
  int submit_attempts = 0;
  int attempts = 0;         // retries of the current step
  int64_t submitted_ms = 0;  // wall time, for people
  // In memory only, on the monotonic clock (util.h mono_ms): not before this time,
  // and since when the job has been followed.
  int64_t due_ms = 0;
  int64_t followed_since_ms = 0;
  // In memory only: a status poll since this start said the job is still
  // QUEUED or PROCESSING (jobs/engine/stuck.h: only then can it be stuck).
  bool seen_running = false;
  // Not saved: after a restart, a job last seen QUEUED renders from no earlier than
  // this (monotonic ms), as far as the stuck limit is concerned.
  int64_t render_not_before_ms = 0;
  // In memory only: waits in a row that are not failed attempts (the API
  // unreachable, busy or rate limiting; the output disk full or its folder
  // missing): their count sets their backoff, and never HOLDs the shot.
  int waits = 0;
  // In memory only: the .part its download left to be resumed, as stat() saw it
  // then (jobs/engine/downloader.h stamp_of); all zero: none to resume.
  PartStamp part_stamp{};
  int64_t completed_ms = 0;
  std::string remote_status;
  std::string output_url;
  std::optional<double> cost;
  std::string metrics_json;  // the provider's metrics object, as JSON text
  std::string file;          // output video path once DONE
  // What ffprobe found in the downloaded video (jobs/video_probe.h
  // video_facts_json: duration, size, codecs, differences from what was asked).
  std::string video_json;
  bool damaged = false;      // its stored record was unreadable; a HELD stand-in
  // For a HELD shot: the step it stopped at (IN_FLIGHT, FETCHING, DOWNLOADING),
  // from which `wanbatch retry` can resume without a new submit; else pending.
  ShotState held_from = ShotState::pending;
  // Revisions (jobs/revision.h). The take this record renders (1 for the first);
  // the take whose video is <shot>.mp4 now (0: none yet); what changed since
  // the previous take (field names; empty for the first take); the render
  // inputs this take was made from (field -> "sha256:<hex>" for a local file,
  // "url:<url>" for a URL), to tell a file edited in place.
  int take = 1;
  int file_take = 0;
  std::vector<std::string> changes;
  std::map<std::string, std::string> inputs;
  // A revision that changed this shot while its take was on the provider: the
  // next take's spec, inputs and changes (revision_next_json), started when
  // this one ends. "" when none.
  std::string next_take;
  bool removed = false;          // it left the manifest in a later revision
  int64_t earlier_cost_micro = 0;  // what its earlier takes cost
  // The request_id of the take announced stuck (jobs/engine/stuck.h): in
  // flight far beyond its render time. Stuck while still in flight on it.
  std::string stuck_request_id;

  std::string key() const { return batch + "/" + spec.id; }
};

// How many shots are in each state, by state name.
std::map<std::string, int> count_states(const std::vector<Shot>& shots);

std::string shot_to_json(const Shot& s);
Shot shot_from_json(const std::string& text);

}  // namespace wb
