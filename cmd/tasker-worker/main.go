// Command tasker-worker is the stock Tasker worker: the built-in handlers
// (noop, echo, sleep, fail, panic) behind the full worker runtime. Teams
// with their own handlers build the same binary through pkg/taskerworker.
package main

import "github.com/seed-a17b38e7/workerpool-operator/pkg/taskerworker"

func main() { taskerworker.Main(taskerworker.NewRegistry()) }
