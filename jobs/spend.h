// What a shot is expected to cost, before the provider says: the price table
// in the config, refined per resolution by every observed metrics.cost.
#pragma once

#include <map>
#include <string>

#include "config/config.h"
#include "jobs/manifest.h"

namespace wb {

class CostModel {
 public:
  explicit CostModel(const PricingConfig& pricing) : pricing_(pricing) {}
  double estimate(const ShotSpec& shot) const;
  // Credits per second of video for a resolution: observed average, else the table.
  double per_second(const std::string& resolution) const;
  void observe(const ShotSpec& shot, double cost);

 private:
  struct Observed {
    double credits = 0;
    double seconds = 0;
  };
  PricingConfig pricing_;
  std::map<std::string, Observed> observed_;
};

}  // namespace wb
