/* sigv4.c - placeholder until the module lands. */
#include "config.h"
#include "lambdagate/sigv4.h"
