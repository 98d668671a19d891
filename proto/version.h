/* The version string the process reports (console banner, info, /metrics build info, the HTTP client's User-Agent). */
#ifndef SB_VERSION_H
#define SB_VERSION_H
#define SB_VERSION "0.1.0"
#endif
