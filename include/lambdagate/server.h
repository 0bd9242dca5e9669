/* server.h - listeners, worker threads, client connections, requests. */
#ifndef LG_SERVER_H
#define LG_SERVER_H
#endif
