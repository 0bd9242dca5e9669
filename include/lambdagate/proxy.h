/* proxy.h - the request pipeline: route, CORS, invoke, map the answer. */
#ifndef LG_PROXY_H
#define LG_PROXY_H
#endif
