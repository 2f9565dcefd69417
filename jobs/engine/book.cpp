#include "jobs/engine/book.h"

#include <limits>

#include "jobs/engine/render_model.h"
#include "jobs/util.h"

namespace wb {

bool is_followed(ShotState s) {
  return s == ShotState::in_flight || s == ShotState::fetching || s == ShotState::downloading;
}

const BatchRecord* ShotBook::batch(const std::string& name) const {
  auto it = batches_.find(name);
  return it == batches_.end() ? nullptr : &it->second;
}

Shot* ShotBook::find(const std::string& key) {
  auto it = shots_.find(key);
  return it == shots_.end() ? nullptr : &it->second;
}

const Shot* ShotBook::find(const std::string& key) const {
  auto it = shots_.find(key);
  return it == shots_.end() ? nullptr : &it->second;
}

ShotBook::PendingKey ShotBook::submit_order(const BatchRecord* b, const Shot& shot) {
  const double work_s = RenderModel::prior_median(RenderClass{shot.spec.resolution, shot.spec.duration});
  return {b ? -b->priority : 0, b ? b->created_ms : 0, shot.batch, -static_cast<int64_t>(work_s * 1000.0), shot.index};
}

void ShotBook::index(const Shot& shot, int sign) {
  counts_[shot.state] += sign;
  if (at_provider(shot.state)) in_slot_ += sign;
  if (shot.state == ShotState::pending) {
    if (sign > 0) pending_[pending_key(shot)] = shot.key();
    else pending_.erase(pending_key(shot));
  }
}

Shot& ShotBook::add(Shot shot) {
  if (!batches_.count(shot.batch)) throw Error("shot " + shot.key() + " added before its batch");
  const std::string key = shot.key();
  if (find(key)) erase(key);
  Shot& s = shots_[key] = std::move(shot);
  index(s, +1);
  ++open_[s.batch];
  if (is_followed(s.state)) queue(s);
  return s;
}

void ShotBook::erase(const std::string& key) {
  auto it = shots_.find(key);
  if (it == shots_.end()) return;
  index(it->second, -1);
  if (--open_[it->second.batch] <= 0) open_.erase(it->second.batch);
  busy_.erase(key);
  queued_.erase(key);
  shots_.erase(it);  // its queue entries go stale and are dropped when reached
}

void ShotBook::set_state(Shot& shot, ShotState state) {
  if (shot.state == state) return;
  index(shot, -1);
  shot.state = state;
  index(shot, +1);
  if (is_followed(state) && !busy(shot.key())) queue(shot);
}

void ShotBook::set_due(Shot& shot, int64_t due_ms) {
  shot.due_ms = due_ms;
  if (is_followed(shot.state) && !busy(shot.key())) queue(shot);
}

void ShotBook::clear_busy(const std::string& key) {
  if (!busy_.erase(key)) return;
  if (Shot* s = find(key); s && is_followed(s->state)) queue(*s);
}

void ShotBook::queue(const Shot& shot) {
  auto [it, added] = queued_.try_emplace(shot.key(), shot.due_ms);
  if (!added && it->second == shot.due_ms) return;
  it->second = shot.due_ms;
  due_.push({shot.due_ms, shot.key()});
}

Shot* ShotBook::pop_due(int64_t now_ms) {
  while (!due_.empty() && due_.top().first <= now_ms) {
    DueEntry e = due_.top();
    due_.pop();
    auto q = queued_.find(e.second);
    if (q == queued_.end() || q->second != e.first) continue;  // queued again since, or handed out
    queued_.erase(q);
    Shot* s = find(e.second);
    // Stale: ended, busy, no longer followed, or due at another time since.
    if (!s || busy(e.second) || !is_followed(s->state) || s->due_ms != e.first) continue;
    return s;
  }
  return nullptr;
}

int64_t ShotBook::next_due_ms() const {
  return due_.empty() ? std::numeric_limits<int64_t>::max() : due_.top().first;
}

std::map<ShotBook::PendingKey, std::string>::const_iterator ShotBook::skip_batch(
    std::map<PendingKey, std::string>::const_iterator from) const {
  if (from == pending_.end()) return from;
  PendingKey next = from->first;
  next.neg_work_ms = std::numeric_limits<int64_t>::max();
  next.index = std::numeric_limits<int>::max();
  return pending_.upper_bound(next);
}

int ShotBook::count(ShotState state) const {
  auto it = counts_.find(state);
  return it == counts_.end() ? 0 : it->second;
}

int ShotBook::open_in_batch(const std::string& batch) const {
  auto it = open_.find(batch);
  return it == open_.end() ? 0 : it->second;
}

}  // namespace wb
