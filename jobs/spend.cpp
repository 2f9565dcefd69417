#include "jobs/spend.h"

namespace wb {

double CostModel::per_second(const std::string& resolution) const {
  auto it = observed_.find(resolution);
  if (it != observed_.end() && it->second.seconds > 0) return it->second.credits / it->second.seconds;
  return resolution == "1080P" ? pricing_.credits_per_second_1080p : pricing_.credits_per_second_720p;
}

double CostModel::estimate(const ShotSpec& shot) const { return per_second(shot.resolution) * shot.duration; }

void CostModel::observe(const ShotSpec& shot, double cost) {
  if (cost < 0 || shot.duration <= 0) return;
  auto& o = observed_[shot.resolution];
  o.credits += cost;
  o.seconds += shot.duration;
}

}  // namespace wb
