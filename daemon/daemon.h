// `wanbatch daemon`: wires the spool watcher, the scheduler, the store and the
// curl transport into one event loop on one thread.
#pragma once

#include <string>

#include "config/config.h"

namespace wb {

// Reads the API key: api.key_env, else api.key_file, else
// $CREDENTIALS_DIRECTORY/segmind-api-key. Removes it from the environment so no
// child process inherits it. Throws wb::Error when none is found or the key file
// is readable by others.
std::string load_api_key(const ApiConfig& api);

// Runs until SIGTERM or SIGINT. Returns the process exit code.
int run_daemon(const Config& config);

}  // namespace wb
