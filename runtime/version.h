/* version.h: the one version string of every binary (--version, the
 * *_build_info metrics, the startup log line). Bump it with a release; the
 * Debian package and the metrics follow. */
#ifndef RUNTIME_VERSION_H
#define RUNTIME_VERSION_H

#define CHAT_VERSION "0.1.0"

#endif
