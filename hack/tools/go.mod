module github.com/seed-a17b38e7/workerpool-operator/hack/tools

go 1.26.8
