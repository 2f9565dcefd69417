#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include "jobs/output.h"
#include "jobs/util.h"
#include "tests/support.h"

using namespace wb;

TEST_CASE("batch files and shot files never share a name in the output folder") {
  std::string root = test::cwd() + "/out";
  test::mkdirs(root);
  OutputDir out(root);
  out.write("b", "report.json", "{\"report\":1}");
  CHECK_THROWS_AS(out.write("b", "sh010.json", "{}"), Error);  // not a batch file
  CHECK_THROWS_AS(out.write_sidecar("b", "report", "{\"shot\":1}"), Error);
  CHECK_THROWS_AS(out.write_sidecar("b", "Report", "{\"shot\":1}"), Error);
  long long offset = 0;
  CHECK_THROWS_AS(out.open_part("b", "report", false, offset), Error);
  int fd = ::open((root + "/b/scratch").c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  CHECK_THROWS_AS(out.commit_part("b", "report", fd), Error);
  ::close(fd);
  CHECK(test::read(root + "/b/report.json") == "{\"report\":1}");
  CHECK(out.write_sidecar("b", "sh010", "{}") == root + "/b/sh010.json");
  CHECK(test::read(root + "/b/sh010.json") == "{}");
}
