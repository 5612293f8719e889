package kubeapply

import (
	"context"
	"fmt"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Access is one question to the apiserver's authorizer: may the subject do
// Verb on Group/Resource[/Subresource] (Name) in Namespace?
type Access struct {
	Verb, Group, Resource, Subresource, Namespace, Name string
}

func (a Access) String() string {
	r := a.Resource
	if a.Group != "" {
		r += "." + a.Group
	}
	if a.Subresource != "" {
		r += "/" + a.Subresource
	}
	if a.Name != "" {
		r += " " + a.Name
	}
	if a.Namespace != "" {
		r += " in " + a.Namespace
	}
	return a.Verb + " " + r
}

// Allowed asks the real authorizer (RBAC) through a SubjectAccessReview,
// the API behind `kubectl auth can-i --as`.
func Allowed(ctx context.Context, c kubernetes.Interface, user string, groups []string, a Access) (bool, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   user,
		Groups: groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: a.Verb, Group: a.Group, Resource: a.Resource, Subresource: a.Subresource,
			Namespace: a.Namespace, Name: a.Name,
		},
	}}
	got, err := c.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("SubjectAccessReview for %s: %w", a, err)
	}
	if got.Status.EvaluationError != "" {
		return got.Status.Allowed, fmt.Errorf("SubjectAccessReview for %s: %s", a, got.Status.EvaluationError)
	}
	return got.Status.Allowed, nil
}
