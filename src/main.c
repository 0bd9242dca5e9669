/* main.c - options, signals, workers. */
#include "config.h"
int main(void)
{
    return 0;
}
