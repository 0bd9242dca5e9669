/* proxy.h - the request pipeline: route, CORS, invoke, map the answer. */
#ifndef LG_PROXY_H
#define LG_PROXY_H

#include "lambdagate/server.h"

/* Handle a complete request: answer it (now or later) with exactly one
 * lg_req_respond*() call. */
void lg_proxy_handle(struct lg_req *req);
/* The client went away before the answer: cancel whatever is pending for
 * req. The server releases req afterwards; lg_req_respond must not be
 * called for it any more. */
void lg_proxy_abort(struct lg_req *req);

#endif
