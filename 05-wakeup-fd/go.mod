module reactorlab/05-wakeup-fd

go 1.26.0

require (
	github.com/google/go-cmp v0.7.0
	github.com/stretchr/testify v1.12.1
	golang.org/x/exp v0.0.0-20261113113407-e3970619a1a4
	golang.org/x/sys v0.50.0
	reactorlab/shared v0.0.0
)

require go.yaml.in/yaml/v3 v3.0.5 // indirect

replace reactorlab/shared => ../shared
