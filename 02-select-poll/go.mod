module reactorlab/02-select-poll

go 1.26.0

require (
	github.com/google/go-cmp v0.7.0
	golang.org/x/sys v0.50.0
	reactorlab/shared v0.0.0
)

replace reactorlab/shared => ../shared
