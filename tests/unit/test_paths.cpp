#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jobs/paths.h"
#include "jobs/util.h"
#include "tests/support.h"

using namespace wb;

TEST_CASE("lexical normalisation resolves dots against the base") {
  CHECK(absolute_lexical("a/./b/../c.png", "/base") == "/base/a/c.png");
  CHECK(absolute_lexical("/abs/x.png", "/base") == "/abs/x.png");
  CHECK(absolute_lexical("../../../etc/shadow", "/base/dir") == "/etc/shadow");
}

TEST_CASE("inside_roots compares whole path components") {
  CHECK(inside_roots("/srv/proj/a.png", {"/srv/proj"}));
  CHECK_FALSE(inside_roots("/srv/project2/a.png", {"/srv/proj"}));
  CHECK_FALSE(inside_roots("/etc/shadow", {"/srv/proj"}));
}

TEST_CASE("read_media confines, sniffs and refuses what is not a plain file") {
  std::string root = test::cwd() + "/media";
  test::mkdirs(root + "/sub");
  test::mkdirs(test::cwd() + "/outside");
  test::write(root + "/a.png", test::png());
  test::write(test::cwd() + "/outside/b.png", test::png(2));
  std::vector<std::string> roots = {root};

  MediaFile f = read_media(root + "/a.png", roots, 1 << 20, MediaKind::image);
  CHECK(f.mime == "image/png");
  CHECK(f.sha256 == sha256_hex(test::png()));

  SUBCASE("a symlinked parent folder that leaves the roots") {
    REQUIRE(::symlink((test::cwd() + "/outside").c_str(), (root + "/linkdir").c_str()) == 0);
    CHECK_THROWS_WITH_AS(read_media(root + "/linkdir/b.png", roots, 1 << 20, MediaKind::image),
                         doctest::Contains("outside the configured input_roots"), Error);
  }
  SUBCASE("a hard link") {
    REQUIRE(::link((root + "/a.png").c_str(), (root + "/hard.png").c_str()) == 0);
    CHECK_THROWS_WITH_AS(read_media(root + "/hard.png", roots, 1 << 20, MediaKind::image),
                         doctest::Contains("hard links"), Error);
  }
  SUBCASE("a FIFO does not block") {
    REQUIRE(::mkfifo((root + "/pipe.png").c_str(), 0644) == 0);
    CHECK_THROWS_WITH_AS(read_media(root + "/pipe.png", roots, 1 << 20, MediaKind::image),
                         doctest::Contains("not a regular file"), Error);
  }
  SUBCASE("a device node through a symlink") {
    REQUIRE(::symlink("/dev/zero", (root + "/zero.png").c_str()) == 0);
    CHECK_THROWS_AS(read_media(root + "/zero.png", roots, 1 << 20, MediaKind::image), Error);
  }
  SUBCASE("an oversized image") {
    CHECK_THROWS_WITH_AS(read_media(root + "/a.png", roots, 10, MediaKind::image),
                         doctest::Contains("max_media_bytes"), Error);
  }
  SUBCASE("audio is sniffed as audio") {
    test::write(root + "/v.wav", std::string("RIFF\x24\0\0\0WAVEfmt ", 16));
    CHECK(read_media(root + "/v.wav", roots, 1 << 20, MediaKind::audio).mime == "audio/wav");
    CHECK_THROWS_AS(read_media(root + "/v.wav", roots, 1 << 20, MediaKind::image), Error);
  }
}
