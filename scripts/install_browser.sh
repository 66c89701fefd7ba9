#!/usr/bin/env bash
# Installs Debian's Chromium for the run report's browser tests (tests/unit/test_report.py) when it is
# missing; does nothing when it is there. Debian's build rather than Playwright's own browser
# download, which needs a host that not every machine running the tests can reach. Playwright
# drives it with the driver its own Python package ships, so no chromedriver is needed.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "installing Debian's chromium for the browser tests" >&2
$SUDO apt-get update -q >&2
# DejaVu: the page's text needs some font on a machine that has none.
$SUDO env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >&2
