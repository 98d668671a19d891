/* The version string every front door reports (console banner, info, /metrics build info). */
#ifndef SB_VERSION_H
#define SB_VERSION_H
#define SB_VERSION "0.1.0"
#endif
