// The money path, alone: a PENDING shot becomes SUBMITTING (synced, with its
// ledger line, before the POST leaves), the POST, and the answer: the
// request_id synced with its ledger line, or why no job was started, or why
// nobody can tell (HELD for a person). Nothing here is ever resent on its own.
// The submit gates' state it changes (429, refused key, credits) is SubmitState.
#pragma once

#include <functional>
#include <string>

#include "jobs/engine/core.h"
#include "jobs/engine/gates.h"
#include "jobs/throttle.h"

namespace wb {

class Submitter {
 public:
  Submitter(Core& core, SubmitState& state, SubmitBucket& bucket) : core_(core), state_(state), bucket_(bucket) {}

  // Records the attempt and sends the submit. Throws wb::Error when the
  // attempt cannot be recorded (then nothing is sent and the shot is as it was).
  void start(Shot& shot);
  size_t on_the_wire() const { return on_wire_; }

  // A job was accepted: the shot is IN_FLIGHT with its request_id.
  std::function<void(Shot&)> on_accepted;
  // A 406 (insufficient credits): the balance should be read again soon.
  std::function<void()> on_credits_short;

 private:
  void on_answer(const std::string& key, const HttpResponse& r);
  // True when the id was already another shot's: both are HELD.
  bool duplicate_id(Shot& shot, const std::string& request_id, nlohmann::json& entry);

  Core& core_;
  SubmitState& state_;
  SubmitBucket& bucket_;
  size_t on_wire_ = 0;
};

nlohmann::json ledger_entry(const Shot& s, const std::string& event, TimePoint now);

}  // namespace wb
