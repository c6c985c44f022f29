/** Every module's StatusContributor, collected by AdminModule; the status controller's one collaborator. */
export const STATUS_CONTRIBUTORS = Symbol('STATUS_CONTRIBUTORS');
